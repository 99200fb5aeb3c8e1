"""pytest plugin: the `wattbench` fixture measures one wattbench case inside a test.

Why: a project that already keeps its performance tests in pytest (and its history in
pytest-benchmark's JSON) can measure throughput *and energy* of a workload with wattbench's
harness -- calibration, warm-up, CUDA-event timing, output verification, power monitor -- and
get the result in the same `--benchmark-json` / `--benchmark-save` files as its other benchmarks.

Use::

    def test_matmul(wattbench):
        result = wattbench("matmul", m=256, n=256, k=256, dtype="float32")
        assert result["efficiency"] is None or result["efficiency"] > 0

`wattbench(workload, *, device=None, min_time=None, repeats=None, repeat_time=None, **params)`
plans the one case (`bench.measure.plan.expand`) on `device` (a `--device` value; None = the best device
present: the first GPU, else the CPU), runs it with `bench.measure.runner.run_case` inside a power
monitor built as `wattbench run` builds it (discovered NVML/RAPL sources plus process memory),
and returns the case's result record (the dict the run file stores). A case that fails
verification, raises or runs out of memory fails the test with its one-line error; a case the
device cannot run (e.g. float8 on a CPU) skips the test with the reason. Bad arguments (unknown
workload or parameter, bad device) fail the test with wattbench's usage message.

Power: like the CLI, the idle power of each device is measured once (1 s, once per pytest
session and device, only where a real power source exists) and used for the case's dynamic
energy. `--wattbench-nominal-watts W` (the CLI's `--nominal-watts`) assumes W watts where
nothing measures power; `--wattbench-no-monitor` turns the monitor off.

One call per test: a second `wattbench(...)` call in the same test raises `WattbenchUsedTwice`
and the test fails; the first call's entry is then marked as errored, so pytest-benchmark leaves
it out of its JSON (one test = one pytest-benchmark entry, as with pytest-benchmark's own
fixture). Parametrize the test to measure several cases.

How the timings reach pytest-benchmark (when it is installed and active): the harness measures;
pytest-benchmark records. After the case has run, this fixture puts a `benchmark` marker first
on the test (keeping the options of any `benchmark` marker the test already had) whose `timer`
is a `ReplayClock`, then asks for pytest-benchmark's `benchmark` fixture
(`request.getfixturevalue`), which reads that marker as it is created. It then calls
`benchmark.pedantic(clock.tick, rounds=repeats, iterations=iterations_per_repeat)`: the clock
reads 0.0 at the start of each round and, at its end, the time the harness measured for that
repeat, so pytest-benchmark's own machinery builds its `Metadata`/`Stats`, appends them to the
session and writes them to `--benchmark-json` / `--benchmark-save` with `stats.data` = the
result's `raw_seconds` (seconds per iteration, one per repeat), `stats.rounds` = the result's
`repeats` and `stats.iterations` = the harness's iterations per repeat. Only public
pytest-benchmark API is used: the marker's `timer` option, `pedantic`, and the fixture's
`extra_info`, `group` and `has_error` attributes. The replay calls the empty `tick` as often as
the harness iterated (well under a microsecond a call: negligible beside the measured work).
Naming is pytest-benchmark's (name = test name, fullname = node id, so `--benchmark-compare`
matches runs by test); group defaults to the workload name unless the test's marker sets one;
`extra_info` holds the case id, throughput, energy_j, dynamic_energy_j, avg_watts,
energy_source, efficiency (work per joule) and the device. The `options` pytest-benchmark
stores beside them are its own settings, which did not apply.

Without pytest-benchmark, with `-p no:benchmark`, or with `--benchmark-disable`, the fixture
still runs the case and returns the result; nothing is recorded. `--benchmark-skip` skips
wattbench tests (before running anything) like other benchmarks. Known limits: `--benchmark-only`
decides at collection by whether a test requests `benchmark` itself, so it skips tests that use
only `wattbench`; and a test must not request both `benchmark` and `wattbench` (it fails at
set-up saying so).

Registration: the `pytest11` entry point `wattbench` loads this module in every pytest session
of an environment where wattbench is installed (it imports nothing heavy until a test calls the
fixture). Do not also pass `-p bench.pytest_plugin` there: pytest refuses to register one module
under two names; `-p no:wattbench` turns the plugin off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from bench.measure.hardware import DeviceInfo
    from bench.monitor.sampler import Monitor

BENCHMARK_PLUGIN = "benchmark"  # the name pytest-benchmark's pytest11 entry point registers
_IDLE_KEY = pytest.StashKey[dict[str, "float | None"]]()


class WattbenchUsedTwice(RuntimeError):
    """`wattbench(...)` was called a second time in one test."""


class ReplayClock:
    """A virtual clock for pytest-benchmark's `timer` option that replays measured rounds.

    `load(per_iter, iterations, result)` sets the rounds to replay; `tick` is the benchmarked
    target. pytest-benchmark reads the clock before a round (start) and after it (end): a read
    with no tick since the last read gives 0.0, the first read after round k's ticks gives
    per_iter[k] * iterations. So end - start is exactly the harness's time for that repeat, and
    pytest-benchmark's duration / iterations is its seconds per iteration (bit-exact for one
    iteration per round, within float rounding otherwise). Ticks after the last round (the
    extra call pedantic makes for its return value, cProfile runs) add nothing.
    """

    __name__ = "wattbench_replay"  # pytest-benchmark stores funcname(timer) in its options

    def __init__(self) -> None:
        self.per_iter: list[float] = []
        self.iterations = 1
        self.calls = 0
        self.pending: float | None = None
        self.result: dict[str, Any] | None = None

    def __call__(self) -> float:
        value, self.pending = self.pending, None
        return 0.0 if value is None else value

    def load(self, per_iter: list[float], iterations: int, result: dict[str, Any]) -> None:
        self.per_iter = [float(s) for s in per_iter]
        self.iterations = max(1, int(iterations))
        self.calls = 0
        self.pending = None
        self.result = result

    def tick(self) -> dict[str, Any] | None:
        round_index, position = divmod(self.calls, self.iterations)
        self.calls += 1
        if position == 0 and round_index < len(self.per_iter):
            self.pending = self.per_iter[round_index] * self.iterations
        return self.result


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wattbench", "wattbench fixture (throughput and energy of one case)")
    group.addoption(
        "--wattbench-nominal-watts",
        type=float,
        default=None,
        metavar="W",
        help="watts to assume where nothing measures a device's power (an estimate)",
    )
    group.addoption("--wattbench-no-monitor", action="store_true", default=False, help="do not sample power, energy or memory")


def _benchmark_active(request: pytest.FixtureRequest) -> bool:
    """Whether pytest-benchmark is installed and loaded in this session (it may be disabled)."""
    return request.config.pluginmanager.hasplugin(BENCHMARK_PLUGIN)


def _check_benchmark_options(request: pytest.FixtureRequest) -> None:
    """At set-up: refuse a test that also requests `benchmark`; honour --benchmark-skip."""
    if not _benchmark_active(request):
        return
    if "benchmark" in request.fixturenames:
        pytest.fail(
            f"{request.node.nodeid}: uses both the `benchmark` and the `wattbench` fixture; "
            "wattbench records its measurement through `benchmark`, so use only `wattbench`",
            pytrace=False,
        )
    config = request.config
    if config.getoption("benchmark_skip", False) and not config.getoption("benchmark_only", False):
        pytest.skip("Benchmarks are skipped (--benchmark-skip was used).")


def _benchmark_fixture(request: pytest.FixtureRequest) -> tuple[Any, ReplayClock]:
    """pytest-benchmark's `benchmark` fixture for this test, created now with a ReplayClock as
    its timer (a marker put first on the test, keeping the options of any marker it had)."""
    clock = ReplayClock()
    existing = request.node.get_closest_marker("benchmark")
    options = dict(existing.kwargs) if existing else {}
    options["timer"] = clock
    request.node.add_marker(pytest.mark.benchmark(**options), append=False)
    return request.getfixturevalue("benchmark"), clock


def _idle_watts(config: pytest.Config, monitor: Monitor, device: DeviceInfo) -> float | None:
    """The device's idle watts, measured once per session (as `wattbench run` does per run)."""
    from bench.measure.runner import measure_idle

    cache = config.stash.setdefault(_IDLE_KEY, {})
    if device.id not in cache:
        if any(s.device_id == device.id for s in monitor.sources):
            entry = measure_idle(monitor).get(device.id)
            watts = entry.get("watts") if isinstance(entry, dict) else None
            cache[device.id] = float(watts) if isinstance(watts, (int, float)) else None
        else:
            cache[device.id] = None
    return cache[device.id]


class Wattbench:
    """The callable the `wattbench` fixture returns; see the module docstring."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.result: dict[str, Any] | None = None
        self._called = False
        self._benchmark: Any = None

    def __call__(
        self,
        workload: str,
        /,
        *,
        device: str | None = None,
        min_time: float | None = None,
        repeats: int | None = None,
        repeat_time: float | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        if self._called:
            if self._benchmark is not None:
                self._benchmark.has_error = True  # pytest-benchmark leaves errored entries out of its JSON
            raise WattbenchUsedTwice(
                "wattbench(...) can be called once per test (one test records one pytest-benchmark entry); "
                "parametrize the test to measure several cases"
            )
        self._called = True

        from bench.errors import UsageError
        from bench.measure.hardware import resolve_devices
        from bench.measure.plan import expand
        from bench.measure.timing import TimingConfig

        problem: str | None = None
        try:
            devices = resolve_devices(device)
            if len(devices) != 1:
                raise UsageError(f"device={device!r} names {len(devices)} devices ({', '.join(d.id for d in devices)}); give one")
            settings: dict[str, Any] = {"min_time_s": min_time, "repeats": repeats, "repeat_time_s": repeat_time}
            try:
                timing = TimingConfig(**{k: v for k, v in settings.items() if v is not None})
            except (TypeError, ValueError) as exc:
                raise UsageError(str(exc)) from None
            cases = expand(workload, {key: [value] for key, value in params.items()}, devices)
            if len(cases) != 1:
                raise UsageError(f"{workload}: the parameters give {len(cases)} cases; give one value per parameter")
        except UsageError as exc:
            problem = str(exc)
        if problem is not None:
            pytest.fail(f"wattbench: {problem}", pytrace=False)

        case, dev = cases[0], devices[0]
        result = self._run(case, dev, timing)
        self.result = result
        if result["status"] == "skipped":
            pytest.skip(f"{case.id}: {result['error']}")
        if result["status"] != "ok":
            pytest.fail(f"{case.id}: {result['status']}: {result['error']}", pytrace=False)
        self._record(result, dev)
        return result

    def _run(self, case: Any, device: DeviceInfo, timing: Any) -> dict[str, Any]:
        from bench.measure.runner import run_case
        from workloads import get

        config = self.request.config
        if config.getoption("wattbench_no_monitor"):
            return run_case(case, device, timing, get(case.workload))

        from bench.monitor.discover import discover
        from bench.monitor.process import ProcessMemory
        from bench.monitor.sampler import DEFAULT_INTERVAL_S, Monitor

        found = discover([device.ref()], config.getoption("wattbench_nominal_watts"))
        with Monitor([*found.sources, ProcessMemory()], DEFAULT_INTERVAL_S) as monitor:
            idle = _idle_watts(config, monitor, device)
            return run_case(case, device, timing, get(case.workload), monitor, idle)

    def _record(self, result: dict[str, Any], device: DeviceInfo) -> None:
        """Replay the measured repeats into pytest-benchmark's fixture (see the module docstring)."""
        if not _benchmark_active(self.request):
            return
        benchmark, clock = _benchmark_fixture(self.request)
        self._benchmark = benchmark
        energy = result.get("energy") or {}
        throughput = result.get("throughput") or {}
        unit = result.get("work_unit")
        benchmark.extra_info.update(
            {
                "case": result["id"],
                "workload": result["workload"],
                "params": result["params"],
                "device": result["device"],
                "device_name": device.name,
                "throughput": throughput.get("median"),
                "throughput_unit": f"{unit}/s" if unit else None,
                "work_unit": unit,
                "work_per_iter": result.get("work_per_iter"),
                "energy_j": energy.get("joules"),
                "dynamic_energy_j": energy.get("dynamic_joules"),
                "avg_watts": energy.get("avg_watts"),
                "energy_source": energy.get("source"),
                "efficiency": result.get("efficiency"),
                "efficiency_unit": f"{unit}/J" if unit else None,
                "flags": list(result.get("flags") or []),
            }
        )
        if benchmark.group is None:
            benchmark.group = result["workload"]
        raw = list(result["raw_seconds"])
        iterations = int(result["iterations"] or 1)
        clock.load(raw, iterations, result)
        benchmark.pedantic(clock.tick, rounds=len(raw), iterations=iterations, warmup_rounds=0)


@pytest.fixture
def wattbench(request: pytest.FixtureRequest) -> Wattbench:
    """Measure one wattbench case in this test: `wattbench("matmul", m=256, dtype="float32")`."""
    _check_benchmark_options(request)
    return Wattbench(request)
