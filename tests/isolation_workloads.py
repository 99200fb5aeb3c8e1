"""Workloads that break their process, for the process-isolation tests (tests/test_isolation.py).

They live at module level so a worker process can import them by module and qualname. Each
misbehaves on the first timed call of run() (the second call: the first is the checked one),
so the failure happens while the case is being measured, not before. `DiesInRound2` dies only
once a marker file exists in $WATTBENCH_TEST_MARKERS, which its first setup creates: a case
whose round 1 is fine and whose round 2 kills its worker.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch

from bench.measure.workload import Param, Verification, Work, Workload, max_rel_error, seeded_generator

MARKER_DIR_ENV = "WATTBENCH_TEST_MARKERS"


class Good(Workload):
    """y = 2x on a small vector: fast, correct, harmless."""

    name = "iso_good"
    summary = "y = 2x (a well-behaved test workload)"
    params = (Param("n", "int", 4096, "vector length"),)

    def setup(self) -> None:
        self.x = torch.rand(self.p["n"], generator=seeded_generator(self.torch_device), device=self.torch_device)
        self.calls = 0

    def run(self) -> None:
        self.calls += 1
        self.y = self.x * 2.0

    def work(self) -> Work:
        return Work("FLOP", float(self.p["n"]))

    def verify(self) -> Verification:
        return Verification(max_rel_error(self.y, self.x.double() * 2.0), 1e-6)


class KillsItself(Good):
    """SIGKILLs its own process on the first timed iteration: a segfault or the OOM killer."""

    name = "iso_kill"

    def run(self) -> None:
        super().run()
        if self.calls == 2:
            os.kill(os.getpid(), signal.SIGKILL)


class Raises(Good):
    """Raises on the first timed iteration, as a CUDA error surfaces in a later call."""

    name = "iso_raise"

    def run(self) -> None:
        super().run()
        if self.calls == 2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")


class Hangs(Good):
    """Never returns from the first timed iteration: a kernel that does not finish."""

    name = "iso_hang"

    def run(self) -> None:
        super().run()
        if self.calls == 2:
            time.sleep(3600)


class DiesInRound2(Good):
    """Round 1 is fine; every later setup kills the process (see the module docstring)."""

    name = "iso_die_later"

    def setup(self) -> None:
        marker = Path(os.environ[MARKER_DIR_ENV]) / f"{self.name}-{self.p['n']}"
        if marker.exists():
            os.kill(os.getpid(), signal.SIGKILL)
        marker.touch()
        super().setup()


ALL = (Good, KillsItself, Raises, Hangs, DiesInRound2)
