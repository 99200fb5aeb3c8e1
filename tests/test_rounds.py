"""Rounds: every case measured several times, in a new random order each round, pooled honestly."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bench import results
from bench.cli import main
from bench.errors import Unsupported
from bench.measure import runner
from bench.measure.hardware import cpu_device, host_info
from bench.measure.plan import expand
from bench.monitor.discover import DeviceRef, discover
from bench.monitor.sampler import Monitor
from bench.record import Energy
from bench.report import gate
from bench.report.load import load
from tests.test_compare import _doc
from workloads.matmul import MatMul


def _run(path, cases, timing, monitor=None):
    cpu = cpu_device()
    doc = runner.new_run_document("test", host_info(), [cpu], timing, len(cases))
    run_file = results.RunFile(path, doc)
    runner.run(cases, [cpu], timing, run_file, context=runner.RunContext(monitor=monitor or Monitor([])))
    return json.loads(path.read_text())


def test_every_case_gets_every_round_and_the_order_is_shuffled(tmp_path, fast_timing):
    cpu = cpu_device()
    cases = expand("matmul", {"size": [16, 24, 32, 40, 48], "dtype": ["float32"]}, [cpu])
    doc = _run(tmp_path / "r.json", cases, replace(fast_timing, rounds=3))
    assert [c["id"] for c in doc["cases"]] == [c.id for c in cases]  # the file keeps plan order
    orders = []
    for k in range(3):
        started = sorted((c["rounds"][k]["started_at"], c["id"]) for c in doc["cases"])
        orders.append([case_id for _, case_id in started])
    assert any(order != [c.id for c in cases] for order in orders)  # some round not in plan order
    for case in doc["cases"]:
        assert case["status"] == "ok" and [r["round"] for r in case["rounds"]] == [1, 2, 3]
        counts = [r["repeats"] for r in case["rounds"]]
        assert len(set(counts)) == 1  # later rounds time the first round's loop
        assert case["repeats"] == len(case["raw_seconds"]) == sum(counts)
        assert case["seconds_per_iter"]["n"] == sum(counts)
        assert "rounds_incomplete" not in case["flags"]
        assert all(r["started_at"] < s["started_at"] for r, s in zip(case["rounds"], case["rounds"][1:], strict=False))
    frame = load([tmp_path / "r.json"])
    assert all(counts == [repeats // 3] * 3 for counts, repeats in zip(frame["round_repeats"], frame["repeats"], strict=True))


def test_one_round_keeps_plan_order(tmp_path, fast_timing):
    cases = expand("matmul", {"size": [16, 24, 32], "dtype": ["float32"]}, [cpu_device()])
    doc = _run(tmp_path / "r.json", cases, fast_timing)
    assert [len(c["rounds"]) for c in doc["cases"]] == [1, 1, 1]
    assert [c["rounds"][0]["started_at"] for c in doc["cases"]] == sorted(c["rounds"][0]["started_at"] for c in doc["cases"])


class FailsLater(MatMul):
    """Sets up fine once, then fails: a case that breaks in round 2."""

    setups = 0

    def setup(self) -> None:
        FailsLater.setups += self.p["dtype"] == "float32"
        if FailsLater.setups > 1:
            raise RuntimeError("driver went away")
        super().setup()


def test_a_round_that_fails_fails_the_case_and_keeps_what_was_measured(tmp_path, fast_timing, registry):
    FailsLater.setups = 0
    registry["matmul"] = FailsLater
    cases = expand("matmul", {"size": [16], "dtype": ["float32", "float8"]}, [cpu_device()])
    doc = _run(tmp_path / "r.json", cases, replace(fast_timing, rounds=3))
    failing, skipped = doc["cases"]
    assert failing["status"] == "failed"
    assert failing["error"] == "round 2 of 3: RuntimeError: driver went away"
    assert len(failing["rounds"]) == 1 and len(failing["raw_seconds"]) == failing["rounds"][0]["repeats"]
    assert FailsLater.setups == 2  # no third round after the failure
    assert skipped["status"] == "skipped" and "rounds" not in skipped  # measured once: no point retrying


class InterruptedLater(MatMul):
    setups = 0

    def setup(self) -> None:
        InterruptedLater.setups += 1
        if InterruptedLater.setups > 1:
            raise KeyboardInterrupt
        super().setup()


def test_interrupt_in_a_later_round_keeps_the_earlier_rounds(tmp_path, fast_timing, registry):
    InterruptedLater.setups = 0
    registry["matmul"] = InterruptedLater
    cases = expand("matmul", {"size": [16], "dtype": ["float32"]}, [cpu_device()])
    with pytest.raises(runner.Interrupted):
        _run(tmp_path / "r.json", cases, replace(fast_timing, rounds=3))
    doc = json.loads((tmp_path / "r.json").read_text())
    (case,) = doc["cases"]
    assert doc["run"]["status"] == "interrupted"
    assert case["status"] == "ok" and len(case["rounds"]) == 1
    assert "rounds_incomplete" in case["flags"]


def test_energy_of_the_rounds_adds_up(tmp_path, fast_timing):
    cpu = cpu_device()
    cases = expand("matmul", {"size": [64], "dtype": ["float32"]}, [cpu])
    found = discover([DeviceRef(cpu.id, cpu.kind, cpu.uuid)], nominal_watts=100.0)
    timing = replace(fast_timing, rounds=2, min_time_s=0.05)
    with Monitor(list(found.sources), 0.005) as monitor:
        doc = _run(tmp_path / "r.json", cases, timing, monitor)
    (case,) = doc["cases"]
    energy = case["energy"]
    assert energy["source"] == "nominal" and energy["estimate"]
    assert energy["avg_watts"] == pytest.approx(100.0)
    assert [r["avg_watts"] for r in case["rounds"]] == pytest.approx([100.0, 100.0])
    assert energy["joules"] == pytest.approx(100.0 * energy["duration_s"])
    times = [t for t, _ in energy["trace"]]
    assert times == sorted(times) and times[-1] > energy["duration_s"] / 2  # the second round follows the first
    assert case["efficiency"] == pytest.approx(case["throughput"]["median"] / 100.0)


def test_combined_energy_of_two_windows():
    part = dict(
        joules=10.0,
        avg_watts=100.0,
        peak_watts=120.0,
        source="rapl",
        estimate=False,
        samples=5,
        duration_s=0.1,
        counter_joules=10.0,
        integral_joules=9.8,
        mismatch=0.02,
        trace=[[0.0, 90.0], [0.1, 110.0]],
    )
    other = dict(
        part,
        joules=30.0,
        avg_watts=100.0,
        peak_watts=150.0,
        duration_s=0.3,
        mismatch=0.05,
        counter_joules=30.0,
        integral_joules=None,
        trace=[[0.0, 100.0]],
    )
    combined = Energy.over_rounds([Energy.parse(part), Energy.parse(other)]).to_json()
    assert combined["joules"] == 40.0 and combined["duration_s"] == pytest.approx(0.4)
    assert combined["avg_watts"] == pytest.approx(100.0) and combined["peak_watts"] == 150.0
    assert combined["samples"] == 10 and combined["mismatch"] == 0.05
    assert combined["integral_joules"] is None  # not measured in every window: no total
    assert combined["trace"] == [[0.0, 90.0], [0.1, 110.0], [0.1, 100.0]]


def _rounds_case(rounds):
    raw = [s for r in rounds for s in r]
    return {
        "id": "matmul(m=1)@cpu",
        "workload": "matmul",
        "params": {"m": 1},
        "device": "cpu",
        "status": "ok",
        "error": None,
        "work_unit": "FLOP",
        "work_per_iter": 1e9,
        "raw_seconds": raw,
        "rounds": [{"round": i + 1, "repeats": len(r)} for i, r in enumerate(rounds)],
        "seconds_per_iter": {"median": sorted(raw)[len(raw) // 2]},
        "throughput": None,
        "energy": None,
        "efficiency": None,
        "flags": [],
    }


def _compare(tmp_path, base_rounds, cur_rounds):
    paths = []
    for name, rounds in (("base.json", base_rounds), ("cur.json", cur_rounds)):
        path = tmp_path / name
        path.write_text(json.dumps(_doc([_rounds_case(rounds)])))
        paths.append(path)
    (comp,) = gate.compare(load(paths[:1]), load(paths[1:]))
    return comp


STEADY = [1.0e-3, 1.002e-3, 0.998e-3, 1.001e-3, 0.999e-3]


def test_rounds_that_disagree_make_the_gate_inconclusive(tmp_path):
    """The machine was in a fast spell for 4 of 5 baseline rounds: pooled as one stretch, the
    repeats look like a firm 20% slowdown; as rounds, the gate sees the swing and cannot call it."""
    fast = [s / 1.25 for s in STEADY]
    comp = _compare(tmp_path, [fast, fast, STEADY, fast, fast], [STEADY] * 5)
    assert comp.ratio == pytest.approx(0.8, rel=0.01)
    assert comp.verdict == "inconclusive" and comp.low < 0.85 and comp.high >= 0.99
    flat_base, flat_cur = tmp_path / "fb.json", tmp_path / "fc.json"
    flat_base.write_text(json.dumps(_doc([_rounds_case([fast * 2 + STEADY + fast * 2])])))
    flat_cur.write_text(json.dumps(_doc([_rounds_case([STEADY * 5])])))
    (flat,) = gate.compare(load([flat_base]), load([flat_cur]))
    assert flat.verdict == "slower"  # what the same numbers would say without their rounds
    assert flat.ratio == comp.ratio


def test_a_slowdown_in_every_round_is_found(tmp_path):
    slow = [s * 1.25 for s in STEADY]
    wobble = [[s * f for s in STEADY] for f in (1.0, 1.02, 0.99)]
    comp = _compare(tmp_path, wobble, [[s * 1.01 for s in slow], slow, [s * 0.98 for s in slow]])
    assert comp.verdict == "slower" and comp.high < 0.85


def test_rounds_option_and_setting(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(
        [
            "run",
            "matmul",
            "-p",
            "size=16",
            "--rounds",
            "2",
            "--out",
            str(out),
            "--min-time",
            "0.01",
            "--repeats",
            "2",
            "--repeat-time",
            "0.002",
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["run"]["settings"]["rounds"] == 2 and len(doc["cases"][0]["rounds"]) == 2
    err = capsys.readouterr().err
    assert "[1/2] matmul(m=16,n=16,k=16,dtype=float32)@cpu (round 1): ok" in err
    assert "[2/2] matmul(m=16,n=16,k=16,dtype=float32)@cpu (round 2): ok" in err
    assert main(["run", "matmul", "--rounds", "0", "--out", str(tmp_path / "x.json")]) == 2
    assert "--rounds" in capsys.readouterr().err


class SkipsLarge(MatMul):
    """Cannot run sizes above 16 here: a case skipped in round 1."""

    def setup(self) -> None:
        if self.p["m"] > 16:
            raise Unsupported("too large for this test")
        super().setup()


def test_a_case_skipped_in_round_1_gets_no_more_rounds_and_the_progress_adds_up(tmp_path, capsys, registry):
    registry["matmul"] = SkipsLarge
    out = tmp_path / "r.json"
    code = main(
        [
            "run",
            "matmul",
            "-p",
            "size=16,32",
            "--rounds",
            "3",
            "--out",
            str(out),
            "--min-time",
            "0.01",
            "--repeats",
            "2",
            "--repeat-time",
            "0.002",
        ]
    )
    assert code == 0
    ok, skipped = json.loads(out.read_text())["cases"]
    assert len(ok["rounds"]) == 3 and skipped["status"] == "skipped" and "rounds" not in skipped
    err = capsys.readouterr().err
    assert "(round 1): skipped too large for this test" in err
    assert "[4/4] matmul(m=16,n=16,k=16,dtype=float32)@cpu (round 3): ok" in err  # 2 cases x 3 rounds - 2 not run
    progress = [line for line in err.splitlines() if line.startswith("[")]
    skipped_at = next(i for i, line in enumerate(progress) if "skipped" in line)
    assert all("/4]" in line for line in progress[skipped_at:])  # the total drops when the case stops
    assert len(progress) == 4


def test_efficiency_takes_each_round_by_its_own_watts(tmp_path):
    """Power that moves between rounds is noise in throughput per watt: each round's repeats are
    divided by that round's average watts, not by the pooled figure."""
    case = _rounds_case([STEADY, STEADY])
    case["rounds"][0]["avg_watts"], case["rounds"][1]["avg_watts"] = 100.0, 125.0
    case["energy"] = {"joules": 22.5, "avg_watts": 112.5, "source": "rapl"}
    path = tmp_path / "w.json"
    path.write_text(json.dumps(_doc([case])))
    (row,) = [r for _, r in load([path]).iterrows()]
    assert row["round_watts"] == [100.0, 125.0]
    first, second = gate._samples(row, "efficiency")
    assert first == pytest.approx([1e9 / s / 100.0 for s in STEADY])
    assert second == pytest.approx([1e9 / s / 125.0 for s in STEADY])
    case["rounds"][1]["avg_watts"] = None  # a round without power: the pooled figure for all
    path.write_text(json.dumps(_doc([case])))
    (row,) = [r for _, r in load([path]).iterrows()]
    assert row["round_watts"] is None
    assert gate._samples(row, "efficiency")[1] == pytest.approx([1e9 / s / 112.5 for s in STEADY])


def test_no_idle_window_where_nothing_measures_power():
    """A run whose sources measure no power (memory only, or a nominal wattage, which has no idle
    draw) does not wait a second for an idle baseline it cannot have."""
    from bench.monitor.nominal import NominalSource
    from bench.monitor.process import ProcessMemory

    class NoWindow(Monitor):
        def window(self, synchronize=None):
            raise AssertionError("an idle window was opened")

    assert runner.measure_idle(NoWindow([ProcessMemory(), NominalSource(100.0, "cpu")])) == {}
