"""A run whose file is the same every time: the golden run that guards the result format.

Everything a run reads from the world is replaced by something scripted:
- time: `time.monotonic`, `perf_counter(_ns)` and `sleep` read and advance a virtual clock that
  moves only when the fake timer times a loop or the run sleeps (the idle-power window);
- the timer: a loop of n iterations "takes" n times a scripted per-iteration time (`TIMES_S`),
  the workload still runs for real so its check passes as it would;
- the GPU: `CPU_AS_GPU` (a CUDA-kind device computing on the CPU, tests/fake_device.py) with the
  simulated NVML as its power source (energy counter and power read on the virtual clock), and
  the sampler's interval so long that only the window edges are read;
- the host: a fixed description, and the run id (it seeds the order of each round's cases).

What still differs from run to run is the run id and the timestamps; `normalised` masks them.
Run `python -m tests.golden.deterministic PATH` to write the file (the golden copy was written
by the code of commit 203a7bd, before the typed record).
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

from bench import results
from bench.measure import lifecycle, runner, runtime, timing
from bench.measure.hardware import DeviceInfo, HostInfo
from bench.measure.plan import expand
from bench.measure.timing import TimingConfig
from bench.monitor.discover import DeviceRef, discover
from bench.monitor.sampler import Monitor
from tests.fake_device import CPU_AS_GPU, FakeRuntime
from tests.fake_nvml import FakeGpu, FakeNvmlState, PowerTrace, make_module

GOLDEN = Path(__file__).with_name("deterministic-run.json")
HOST = HostInfo(
    hostname="golden",
    os="Linux (golden)",
    python="3.11",
    torch="2.13.0+cpu",
    cuda="12.8",
    driver="570.00",
    cpu_model="golden CPU",
    cpu_count=2,
    memory_bytes=16 * 1024**3,
    torch_threads=2,
    nvml="570.00",
)
GPU = replace(CPU_AS_GPU, uuid="GPU-golden-0000", power_limit_w=700.0, multiprocessors=132)
TIMING = TimingConfig(min_time_s=0.5, repeats=5, repeat_time_s=0.05, warmup_max_s=0.2, rounds=2)
# Seconds per iteration of the n-th timed loop: a slow drift and a wobble, so statistics are not trivial.
TIMES_S: Callable[[int], float] = lambda n: 1e-3 * (1.0 + 0.02 * math.sin(n) + 0.0005 * n)  # noqa: E731
RUN_ID = "901de2a0901de2a0901de2a0901de2a0"
MASKED_RUN_KEYS = ("id", "started_at", "finished_at")


class VirtualClock:
    """A clock that moves only when told: by the fake timer and by `sleep`."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def monotonic(self) -> float:
        return self.now_s

    def monotonic_ns(self) -> int:
        return int(self.now_s * 1e9)

    def sleep(self, seconds: float) -> None:
        self.now_s += max(0.0, seconds)


class ScriptedTimer:
    """Times `iterations` calls of `fn` as `iterations * TIMES_S(n)` for the n-th loop, and
    advances the virtual clock by as much. `fn` still runs: its side effects are the workload's."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.loops = 0

    def time(self, fn: Callable[[], object], iterations: int) -> float:
        for _ in range(iterations):
            fn()
        seconds = iterations * TIMES_S(self.loops)
        self.loops += 1
        self.clock.sleep(seconds)
        return seconds


@contextlib.contextmanager
def scripted_world() -> Iterator[VirtualClock]:
    """The virtual clock, the scripted timer, the simulated NVML and the CPU-as-GPU runtime."""
    from bench.device.nvidia import nvml
    from bench.measure import hardware

    clock = VirtualClock()
    with contextlib.ExitStack() as stack:
        for name in ("monotonic", "perf_counter"):
            stack.enter_context(mock.patch.object(time, name, clock.monotonic))
        for name in ("monotonic_ns", "perf_counter_ns"):
            stack.enter_context(mock.patch.object(time, name, clock.monotonic_ns))
        stack.enter_context(mock.patch.object(time, "sleep", clock.sleep))
        # The run id seeds the order of each round's cases: fixed, so the scripted times meet
        # the same cases every time.
        stack.enter_context(mock.patch.object(uuid, "uuid4", lambda: uuid.UUID(RUN_ID)))
        timer = ScriptedTimer(clock)
        stack.enter_context(mock.patch.object(timing, "timer_for", lambda device: timer))
        stack.enter_context(mock.patch.object(lifecycle, "timer_for", lambda device: timer))
        gpu = FakeGpu(
            uuid=GPU.uuid or "",
            name=GPU.name,
            trace=PowerTrace(base_w=400.0, amp_w=50.0, period_s=0.25),
            counter_period_s=0.001,
            power_period_s=0.001,
        )
        nvml.reset()
        stack.callback(nvml.reset)
        stack.callback(hardware.nvml_inventory.cache_clear)
        stack.enter_context(mock.patch.dict(sys.modules, {"pynvml": make_module(FakeNvmlState(gpus=[gpu]))}))
        stack.enter_context(runtime.use(FakeRuntime(real_data=True, peak_bytes=3 * 1024**2)))
        yield clock


def write(path: Path) -> dict[str, Any]:
    """Run the golden cases in the scripted world, write the run file to `path` and return it."""
    devices: list[DeviceInfo] = [GPU]
    with scripted_world():
        cases = expand("matmul", {"size": [64], "dtype": ["float32"], "graph": [False, True]}, devices)
        cases += expand("membw", {"op": ["triad"], "size": [2**16]}, devices)
        found = discover([DeviceRef(d.id, d.kind, d.uuid) for d in devices], probe=False)
        doc = runner.new_run_document("wattbench run (golden)", HOST, devices, TIMING, len(cases))
        doc["run"]["monitor"] = {"interval_s": 1e4, "status": dict(found.status), "sources": found.describe()}
        run_file = results.RunFile(path, doc)
        with Monitor(list(found.sources), interval_s=1e4) as monitor:
            runner.run(cases, devices, TIMING, run_file, context=runner.RunContext(monitor=monitor))
    return results.read_run(path)


def write_measured_by(path: Path, device: DeviceInfo, title: str) -> dict[str, Any]:
    """The golden cases in the scripted world on `device` (a CPU standing in for a GPU), measured
    by the power source discovery finds for its UUID: that of whichever vendor lists it (the
    simulated AMD SMI, a device plugin). Not golden files: tests of reports across vendors."""
    with scripted_world():
        cases = expand("matmul", {"size": [64], "dtype": ["float32"], "graph": [False, True]}, [device])
        cases += expand("membw", {"op": ["triad"], "size": [2**16]}, [device])
        found = discover([device.ref()], probe=False)
        doc = runner.new_run_document(title, HOST, [device], TIMING, len(cases))
        doc["run"]["monitor"] = {"interval_s": 1e4, "status": dict(found.status), "sources": found.describe()}
        run_file = results.RunFile(path, doc)
        with Monitor(list(found.sources), interval_s=1e4) as monitor:
            runner.run(cases, [device], TIMING, run_file, context=runner.RunContext(monitor=monitor))
    return results.read_run(path)


def write_amd(path: Path) -> dict[str, Any]:
    """The golden cases measured as on an AMD GPU: the simulated AMD SMI (tests/fake_amdsmi.py)
    lists an MI300X with the UUID of the CPU standing in for it (`write_measured_by`)."""
    from bench.device.amd import smi
    from tests.fake_amdsmi import FakeAmdGpu, FakeAmdSmiState
    from tests.fake_amdsmi import make_module as make_amdsmi

    amd = replace(GPU, name="AMD Instinct MI300X", uuid="6eff74a1-0000-1000-80c2-3a0f5b2d1e11", power_limit_w=750.0)
    smi.reset()
    try:
        with mock.patch.dict(sys.modules, {"amdsmi": make_amdsmi(FakeAmdSmiState(gpus=[FakeAmdGpu()]))}):
            return write_measured_by(path, amd, "wattbench run (golden, AMD)")
    finally:
        smi.reset()


def normalised(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` without what differs between two runs of the same cases: the run id and timestamps."""
    doc = copy.deepcopy(doc)
    for key in MASKED_RUN_KEYS:
        doc["run"][key] = "<masked>"
    for case in doc["cases"]:
        for entry in case.get("rounds") or []:
            entry["started_at"] = "<masked>"
    return doc


if __name__ == "__main__":
    written = write(Path(sys.argv[1]) if len(sys.argv) > 1 else GOLDEN)
    print(f"{len(written['cases'])} cases, status {written['run']['status']}")
