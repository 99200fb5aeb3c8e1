"""The simulated NVML (tests/fake_nvml.py) as `import pynvml`, for test subprocesses only.

A test runs a subprocess with PYTHONPATH=tests/fake_site:<repo> (and usually
WATTBENCH_FAKE_NVML_STATE=<a JSON file>): wattbench's `import pynvml` then gets this module, whose
GPUs are those the state file describes (one H100 profile unless it says otherwise) and whose
settings persist in that file, so the test, the subprocess and its watchdog see one device.
Nothing in bench/ imports this; on a machine with a real GPU it is never on the path outside tests.
"""

from __future__ import annotations

import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _REPO not in sys.path:  # tests.fake_nvml lives in the repository
    sys.path.append(_REPO)

from tests.fake_nvml import STATE_ENV, make_module, state_from_file  # noqa: E402

globals().update(
    {k: v for k, v in vars(make_module(state_from_file(os.environ.get(STATE_ENV) or None))).items() if not k.startswith("__")}
)
