"""The simulated AMD SMI (tests/fake_amdsmi.py) as `import amdsmi`, for test subprocesses only.

With WATTBENCH_FAKE_AMDSMI_STATE naming a JSON file, `import amdsmi` gets this module, whose GPUs
are those the file describes (two MI300X unless it says otherwise) and whose power caps persist in
it, so the test, the subprocess and its watchdog see one device. Without the variable it behaves
as the real amdsmi 7.0.2 does on a machine without ROCm: it prints two lines to stdout and raises
KeyError('libamd_smi.so'), so every other test subprocess sees no AMD GPU. Nothing in bench/
imports this; on a real machine it is never on the path outside tests.
"""

from __future__ import annotations

import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _REPO not in sys.path:  # tests.fake_amdsmi lives in the repository
    sys.path.append(_REPO)

from tests.fake_amdsmi import STATE_ENV, make_module, state_from_file  # noqa: E402

if not os.environ.get(STATE_ENV):
    print("/opt/rocm/lib/libamd_smi.so: cannot open shared object file: No such file or directory")
    print("Unable to find libamd_smi.so library try installing amd-smi-lib from your package manager")
    raise KeyError("libamd_smi.so")

_module = make_module(state_from_file(os.environ[STATE_ENV]))
globals().update({k: v for k, v in vars(_module).items() if not k.startswith("__")})
