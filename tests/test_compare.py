"""The regression gate: real slowdowns fail, honest reruns pass, noise is inconclusive."""

import json

import numpy as np
import pytest
import torch

from bench import results
from bench.cli import main
from bench.report import gate
from bench.report.load import load
from tests.slowed import SlowedMatMul

FAST = ["--min-time", "0.3", "--repeats", "10", "--repeat-time", "0.02"]


def _doc(cases, device_name="Test CPU", device_id="cpu", **sections):
    """A minimal valid run document holding `cases` on one device; `sections` adds or replaces
    top-level keys (a `workloads` section, for example)."""
    return {
        "schema": results.SCHEMA,
        "run": {
            "id": "r",
            "started_at": "2026-11-24T00:00:00Z",
            "finished_at": None,
            "wattbench_version": "0",
            "command": "test",
            "status": "complete",
        },
        "host": {"hostname": "h", "os": "Linux", "python": "3.11", "torch": "2.13"},
        "devices": [{"id": device_id, "kind": device_id.split(":")[0], "name": device_name, "memory_bytes": 1}],
        "cases": cases,
        **sections,
    }


def _case(name, raw, status="ok", watts=None):
    return {
        "id": f"matmul({name})@cpu",
        "workload": "matmul",
        "params": {"m": name},
        "device": "cpu",
        "status": status,
        "error": None if status == "ok" else "boom",
        "work_unit": "FLOP",
        "work_per_iter": 1e9,
        "raw_seconds": list(raw),
        "seconds_per_iter": {"median": float(np.median(raw))} if raw else None,
        "throughput": {"median": 1e9 / float(np.median(raw))} if raw else None,
        "energy": {"joules": 1.0, "avg_watts": watts, "source": "rapl"} if watts else None,
        "efficiency": None,
        "flags": [],
    }


def _write(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def _frames(tmp_path, base_cases, cur_cases, cur_device="Test CPU"):
    b = _write(tmp_path, "base.json", _doc(base_cases))
    c = _write(tmp_path, "cur.json", _doc(cur_cases, cur_device))
    return b, c


rng = np.random.default_rng(1)
STEADY = list(1e-3 * (1 + 0.005 * rng.standard_normal(10)))
NOISY = list(1e-3 * (1 + 0.15 * rng.standard_normal(10)).clip(0.5))


def test_noise_estimate_widens_the_band():
    assert gate.run_to_run_sigma([1.0, 1.1, 0.9]) is None  # too few cases to tell
    assert gate.run_to_run_sigma([0.8, 0.8, 0.8, 0.8]) == 0.0  # everything moved alike: no noise
    sigma = gate.run_to_run_sigma([0.9, 1.1, 0.95, 1.05, 1.0])
    assert 0.05 < sigma < 0.1


def test_noisy_reruns_do_not_fail_but_a_larger_change_does(tmp_path):
    """Cases scattered +-10% between runs widen the band; halving one case still fails."""
    scales = [1.10, 0.90, 1.08, 0.93, 1.0, 1.0]
    base = [_case(i, STEADY) for i in range(6)]
    cur = [_case(i, [x * s for x in STEADY]) for i, s in enumerate(scales)]
    b, c = _frames(tmp_path, base, cur)
    comps = gate.compare(load([b]), load([c]))
    assert not gate.regressions(comps)
    assert comps[0].band > 0.1
    cur[4] = _case(4, [x * 2.0 for x in STEADY])
    b, c = _frames(tmp_path, base, cur)
    comps = gate.compare(load([b]), load([c]))
    assert [x.params for x in gate.regressions(comps)] == ["m=4"]


@pytest.mark.parametrize(
    "scale, expected",
    [(1.0, "unchanged"), (1.25, "slower"), (0.8, "faster"), (1.02, "unchanged")],
)
def test_verdicts_on_steady_samples(tmp_path, scale, expected):
    b, c = _frames(tmp_path, [_case(1, STEADY)], [_case(1, [x * scale for x in STEADY])])
    (comp,) = gate.compare(load([b]), load([c]))
    assert comp.verdict == expected
    assert comp.ratio == pytest.approx(1 / scale, rel=0.01)
    assert comp.low <= comp.ratio <= comp.high


def test_several_runs_per_side_carry_run_to_run_noise(tmp_path):
    """Three baseline runs that differ by 10% make a 10% drop in the current run inconclusive,
    where a single steady baseline would call it slower."""
    base_runs = [[x * s for x in STEADY] for s in (0.95, 1.0, 1.05)]
    folder = tmp_path / "baselines"
    folder.mkdir()
    for i, raw in enumerate(base_runs):
        _write(folder, f"{i}.json", _doc([_case(1, raw)]))
    cur = _write(tmp_path, "cur.json", _doc([_case(1, [x * 1.1 for x in STEADY])]))
    (comp,) = gate.compare(load([folder]), load([cur]))
    assert comp.verdict == "inconclusive" and "3 vs 1 runs" in comp.note
    single = _write(tmp_path, "one.json", _doc([_case(1, STEADY)]))
    (comp,) = gate.compare(load([single]), load([cur]))
    assert comp.verdict == "slower"


def test_a_single_run_is_as_uncertain_as_the_baseline_runs_say(tmp_path, monkeypatch):
    """Baseline runs 4% apart say one run's level moves by about 4%: an 11% drop in a single
    current run is 2.5 of those, not a regression. Resampling the runs alone would miss it
    (the current run has no spread of its own to show) and call it slower."""
    folder = tmp_path / "baselines"
    folder.mkdir()
    for i, level in enumerate((0.96, 1.0, 1.04)):
        _write(folder, f"{i}.json", _doc([_case(1, [x * level for x in STEADY])]))
    cur = _write(tmp_path, "cur.json", _doc([_case(1, [x * 1.12 for x in STEADY])]))
    assert 0.035 < gate.between_run_sigma([[np.array(STEADY) * s] for s in (0.96, 1.0, 1.04)]) < 0.045
    assert gate.between_run_sigma([[np.array(STEADY)]]) is None  # one run: no spread to tell
    (comp,) = gate.compare(load([folder]), load([cur]))
    assert comp.verdict == "inconclusive" and comp.high > 0.95
    monkeypatch.setattr(gate, "between_run_sigma", lambda *sides: None)
    (comp,) = gate.compare(load([folder]), load([cur]))
    assert comp.verdict == "slower"


def test_noise_is_inconclusive_not_a_regression(tmp_path):
    b, c = _frames(tmp_path, [_case(1, NOISY)], [_case(1, [x * 1.06 for x in NOISY[::-1]])])
    (comp,) = gate.compare(load([b]), load([c]))
    assert comp.verdict == "inconclusive"
    assert gate.regressions([comp]) == []


def test_missing_cases_on_either_side(tmp_path, capsys):
    b, c = _frames(tmp_path, [_case(1, STEADY), _case(2, STEADY)], [_case(2, STEADY), _case(3, STEADY)])
    comps = {x.params: x for x in gate.compare(load([b]), load([c]))}
    assert comps["m=1"].verdict == "missing" and comps["m=1"].note == "not in the current run"
    assert comps["m=3"].verdict == "missing" and comps["m=3"].note == "not in the baseline"
    assert comps["m=2"].verdict == "unchanged"
    assert main(["compare", str(b), str(c)]) == 0
    assert "1 unchanged, 2 missing" in capsys.readouterr().err


def test_newly_failing_case_fails_the_gate(tmp_path):
    b, c = _frames(tmp_path, [_case(1, STEADY)], [_case(1, [], status="failed")])
    (comp,) = gate.compare(load([b]), load([c]))
    assert comp.verdict == "failed"
    assert main(["compare", str(b), str(c)]) == 1


def test_different_hardware_is_refused_unless_allowed(tmp_path, capsys):
    b, c = _frames(tmp_path, [_case(1, STEADY)], [_case(1, STEADY)], cur_device="Other CPU")
    assert main(["compare", str(b), str(c)]) == 2
    err = capsys.readouterr().err
    assert "refusing to compare different hardware" in err and len(err.strip().splitlines()) == 1
    assert main(["compare", str(b), str(c), "--allow-different-hardware"]) == 0
    captured = capsys.readouterr()
    assert "warning: comparing cases from different hardware" in captured.err
    assert "different hardware" in captured.out


def test_efficiency_metric(tmp_path):
    b, c = _frames(tmp_path, [_case(1, STEADY, watts=100.0)], [_case(1, STEADY, watts=130.0)])
    (comp,) = gate.compare(load([b]), load([c]), metric="efficiency")
    assert comp.verdict == "slower" and comp.ratio == pytest.approx(100 / 130)
    (comp,) = gate.compare(load([b]), load([c]), metric="throughput")
    assert comp.verdict == "unchanged"


def test_markdown_format_and_bad_options(tmp_path, capsys):
    b, c = _frames(tmp_path, [_case(1, STEADY)], [_case(1, [x * 1.25 for x in STEADY])])
    assert main(["compare", str(b), str(c), "--format", "markdown"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("| Workload | Params | Baseline | Current | Ratio |")
    assert "**slower**" in out
    assert main(["compare", str(b), str(c), "--metric", "speed"]) == 2
    assert main(["compare", str(b), str(c), "--threshold", "150"]) == 2


@pytest.fixture
def one_thread():
    """One torch thread: on a 2-vCPU runner the second thread's wake-ups are the largest noise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_real_20_percent_slowdown_exits_1(tmp_path, capsys, registry, one_thread):
    base, cur = tmp_path / "base.json", tmp_path / "cur.json"
    args = ["run", "matmul", "-p", "size=384", "-p", "dtype=float32", "--no-monitor", "--min-time", "1", "--repeats", "10"]
    assert main([*args, "--out", str(base)]) == 0
    registry["matmul"] = SlowedMatMul
    assert main([*args, "--out", str(cur)]) == 0
    capsys.readouterr()
    assert main(["compare", str(base), str(cur)]) == 1
    (comp,) = gate.compare(load([base]), load([cur]))
    assert comp.verdict == "slower"
    assert 0.5 < comp.ratio < 0.92  # 0.8 by construction, give or take this machine's noise


@pytest.mark.slow
def test_two_honest_quick_runs_pass(tmp_path, capsys):
    """The issue's criterion, end to end: two honest quick runs back to back, `compare` exits 0.

    Marked slow (`pytest -m slow`, about 75 s): its outcome depends on the state a shared
    machine is in, so its rate belongs to a benchmark, not to `make test`;
    benchmarks/gate_noise.py measures it over many pairs (0 of 142 comparisons failed on the
    2-vCPU CI VM, README "Gating performance in CI"). The deterministic logic behind it (rounds
    that disagree give `inconclusive`, the noise band) is tested in test_rounds.py and here."""
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["run", "quick", "--out", str(first)]) == 0
    assert main(["run", "quick", "--out", str(second)]) == 0
    capsys.readouterr()
    assert main(["compare", str(first), str(second)]) == 0
    assert not gate.regressions(gate.compare(load([first]), load([second])))
