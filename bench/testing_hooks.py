"""Every switch that exists only for wattbench's own tests, in one place.

Production code reaches a test switch only through the hook functions below; nothing else in
bench/ reads a test environment variable. Each switch does nothing unless its variable is set,
and none of them ever makes a report show simulated numbers as real (the simulated NVML and the
fake devices themselves live in tests/, never in bench/).

The seams:

- Fault injection under torchrun: `WATTBENCH_TEST_FAULT=KIND:rank=R:case=I` (`FAULT_ENV`), KIND
  one of raise, exit, kill, hang, setup. When rank R starts plan index I in round 1, it raises out
  of the run, exits, kills itself, hangs, or (`setup`) fails that case's set-up while the job goes
  on. Hooks: `fault(rank, case_index, round_number)` returns the `Fault` to `fire()` there;
  `before_setup()` raises the set-up failure a `setup` fault armed. Used by
  tests/test_distributed.py (the real torchrun jobs: a rank that exits, raises, hangs, is killed,
  or fails a set-up, and the switch's own parsing).
- The simulated operating-point GPU: `WATTBENCH_TEST_OPERATING_GPU=UUID` (`TEST_GPU_ENV`). A run on
  the CPU applies `--power-limit` / `--gpu-clocks` to that GPU of the simulated NVML, so the sweep's
  subprocess tests can change and restore a GPU with no GPU present. Hook:
  `simulated_operating_gpu()`. Used by tests/test_sweep.py.
- Not a switch but a seam, listed so that this page names them all: the GPU runtime. The harness
  and the workloads make every CUDA call that is not a tensor operation through
  `bench.measure.runtime.current()`, which tests swap in-process for a stand-in with
  `bench.measure.runtime.use` (tests/fake_device.py: fake tensors on a CUDA-kind device, used by
  tests/test_fake_device.py, tests/test_llm.py, tests/test_llm_memory.py and the golden
  deterministic run). It stays in runtime.py because the real runtime is production code; nothing
  is read from the environment.

This module imports nothing heavy (no torch): the operating-point controller and the torchrun
execution mode (`bench.measure.modes.Ranked`) call it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

from bench.errors import UsageError

FAULT_ENV = "WATTBENCH_TEST_FAULT"
FAULT_KINDS = ("raise", "exit", "kill", "hang", "setup")
TEST_GPU_ENV = "WATTBENCH_TEST_OPERATING_GPU"


class _SetupFault:
    """Whether a `setup` fault is armed in this process (one rank per process): the next case's
    set-up on this rank fails, once."""

    armed = False


_SETUP = _SetupFault()


@dataclass(frozen=True)
class Fault:
    """A test-only fault: `kind` on `rank` when it starts plan index `case` (round 1): raise out of
    the run, exit, kill itself, hang, or fail that case's set-up (`setup`: the case fails there,
    the run goes on)."""

    kind: str
    rank: int
    case: int

    def applies(self, rank: int, case_index: int, round_number: int) -> bool:
        """True when `rank` starting plan index `case_index` in `round_number` is where it fires."""
        return self.rank == rank and self.case == case_index and round_number == 1

    def fire(self) -> None:
        """Do what the fault says, here and now; `setup` arms `before_setup` instead."""
        if self.kind == "setup":
            arm_setup_failure(True)
            return
        if self.kind == "raise":
            raise RuntimeError(f"injected fault ({FAULT_ENV})")
        if self.kind == "exit":
            sys.stderr.flush()
            os._exit(3)
        if self.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        while True:  # hang: the heartbeat thread keeps beating, the main thread never moves on
            time.sleep(1.0)


def fault_from_env(environ: Mapping[str, str] | None = None) -> Fault | None:
    """The fault FAULT_ENV asks for ("KIND:rank=R:case=I"), or None when it is unset. A value of
    another form is a UsageError saying what is valid."""
    text = (os.environ if environ is None else environ).get(FAULT_ENV, "")
    if not text:
        return None
    parts = text.split(":")
    try:
        fields = dict(p.split("=", 1) for p in parts[1:])
        parsed: Fault | None = Fault(parts[0], int(fields["rank"]), int(fields["case"]))
    except (ValueError, KeyError):
        parsed = None
    if parsed is None or parsed.kind not in FAULT_KINDS or len(parts) != 3:
        raise UsageError(f"{FAULT_ENV}={text!r}: expected KIND:rank=R:case=I with KIND one of {', '.join(FAULT_KINDS)}")
    return parsed


def fault(rank: int, case_index: int, round_number: int, environ: Mapping[str, str] | None = None) -> Fault | None:
    """The hook for fault injection: the fault to `fire()` as `rank` starts plan index
    `case_index` in `round_number`, or None (always None unless FAULT_ENV is set)."""
    found = fault_from_env(environ)
    return found if found is not None and found.applies(rank, case_index, round_number) else None


def arm_setup_failure(armed: bool) -> None:
    """Arm (or disarm) the set-up failure of a `setup` fault in this process."""
    _SETUP.armed = armed


def setup_failure_armed() -> bool:
    """Whether a `setup` fault has armed the next set-up's failure in this process."""
    return _SETUP.armed


def before_setup() -> None:
    """The hook before a case's set-up: the set-up failure a `setup` fault armed, raised once (a
    RuntimeError, so the case fails as a set-up that raised); nothing otherwise."""
    if _SETUP.armed:
        _SETUP.armed = False
        raise RuntimeError(f"injected set-up failure ({FAULT_ENV})")


def simulated_operating_gpu(environ: Mapping[str, str] | None = None) -> str | None:
    """The hook for the sweep: the UUID of the simulated NVML GPU whose operating points a run on
    the CPU sets (TEST_GPU_ENV), or None when it is unset."""
    return (os.environ if environ is None else environ).get(TEST_GPU_ENV) or None
