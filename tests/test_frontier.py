"""The energy-optimal frontier (report --frontier): operating points loaded from result files,
the Pareto set, the most efficient point and the recommendation under constraints, as tables,
a sentence, the CLI and the picture."""

import io
import json

import pytest
from rich.console import Console

from bench import results
from bench.cli import main
from bench.report.frontier import (
    AS_FOUND,
    NOMINAL_NOTE,
    NOT_MEASURED,
    Constraints,
    Point,
    frontier,
    pareto_set,
    recommend,
    sentence,
)
from bench.report.load import load
from bench.report.tables import frontier_to_text, render_frontier, render_to_text

GPU = "NVIDIA H100 80GB HBM3"
MATMUL = {"m": 8192, "n": 8192, "k": 8192, "dtype": "bfloat16"}
TINY = {"model": "tiny", "phase": "decode", "seq": 128, "dtype": "float32"}
SCHEMAS = {
    "matmul": {
        "params": {"m": {"kind": "int"}, "n": {"kind": "int"}, "k": {"kind": "int"}, "dtype": {"kind": "choice"}},
        "shape": ["m", "n", "k"],
    },
    "llm": {
        "params": {
            "model": {"kind": "choice"},
            "phase": {"kind": "choice"},
            "seq": {"kind": "int"},
            "batch": {"kind": "int"},
            "dtype": {"kind": "choice"},
        },
        "shape": [],
        "operating": ["batch"],
    },
}


def _point(watts=None, clocks=None):
    if watts is None and clocks is None:
        return None
    return {
        "power_limit_w": watts,
        "power_limit_request": None if watts is None else f"{watts:g}",
        "enforced_power_limit_w": watts,
        "gpu_clocks_mhz": clocks,
        "settle_s": 2.0,
        "sm_clock_mhz": 1400.0,
        "avg_watts": None,
    }


def _case(
    workload,
    params,
    throughput,
    watts=None,
    limit=None,
    clocks=None,
    work=1e12,
    unit="FLOP",
    source="nvml_energy",
    status="ok",
    error=None,
    device="cuda:0",
):
    """A case at an operating point (a power limit `limit` in W and/or `clocks` in MHz; neither:
    as found) running `throughput` work/s at `watts` (None: no energy), `work` per iteration."""
    op = _point(limit, clocks)
    suffix = []
    if limit is not None:
        suffix.append(f"pl={limit:g}W")
    if clocks is not None:
        suffix.append(f"clk={clocks}MHz")
    seconds = work / throughput
    energy = None
    if watts is not None:
        energy = {"joules": watts * seconds * 30, "avg_watts": watts, "peak_watts": watts, "source": source}
    ok = status == "ok"
    return {
        "id": f"{workload}(...)@{device}" + (f"[{','.join(suffix)}]" if suffix else ""),
        "workload": workload,
        "params": params,
        "device": device,
        "status": status,
        "error": error,
        "work_unit": unit,
        "work_per_iter": work,
        "iterations": 10,
        "repeats": 3,
        "raw_seconds": [seconds] * 3,
        "seconds_per_iter": {"median": seconds, "cv": 0.01},
        "throughput": {"median": throughput},
        "energy": energy if ok else None,
        "efficiency": throughput / watts if ok and watts else None,
        "flags": [],
        "operating_point": op,
    }


def _doc(cases, name=GPU, device="cuda:0", run_id="r1"):
    return {
        "schema": results.SCHEMA,
        "run": {
            "id": run_id,
            "started_at": "2026-12-01T00:00:00Z",
            "finished_at": None,
            "wattbench_version": "0",
            "command": "t",
            "status": "complete",
        },
        "host": {"hostname": "h", "os": "Linux", "python": "3.11", "torch": "2.13", "driver": "570.86.15"},
        "devices": [
            {"id": device, "kind": "cpu" if device == "cpu" else "cuda", "name": name, "memory_bytes": 1, "power_limit_w": 700.0}
        ],
        "workloads": SCHEMAS,
        "cases": cases,
    }


def _load(tmp_path, *docs):
    for i, doc in enumerate(docs):
        (tmp_path / f"run{i}.json").write_text(json.dumps(doc))
    return load([tmp_path])


# A power-limit sweep of one matmul (throughput in FLOP/s, average watts): 300 W is dominated by
# 350 W (slower and more joules per FLOP); the Pareto set is 350 W, 450 W, as found.
SWEEP = {None: (1000e12, 700.0), 450: (970e12, 450.0), 350: (850e12, 350.0), 300: (700e12, 330.0)}


@pytest.fixture
def power_sweep(tmp_path):
    return _load(tmp_path, _doc([_case("matmul", MATMUL, t, w, limit=pl) for pl, (t, w) in SWEEP.items()]))


def _by_label(found):
    return {p.label: p for p in found.points}


# --- loading ---------------------------------------------------------------------------------------


def test_operating_points_load_as_their_own_dimension(power_sweep):
    df = power_sweep
    assert list(df["op_label"]) == ["", "450 W", "350 W", "300 W"]
    assert df["operating_point"].iloc[0] is None and df["operating_point"].iloc[1]["enforced_power_limit_w"] == 450.0
    assert set(df["hardware"]) == {f"{GPU} (driver 570.86.15)"}  # one hardware; the limit is no part of its name
    assert list(df["power_limit_w"]) == [700.0] * 4  # the device's limit as found
    keys = list(df["case_key"])
    assert len(set(keys)) == 4 and keys[1].endswith("[pl=450W]") and not keys[0].endswith("]")
    assert list(df["operating_params"]) == [[]] * 4


def test_run_table_shows_the_op_point_and_the_hardware_report_one_hardware(tmp_path, power_sweep):
    text = render_to_text(power_sweep, width=200)
    header = next(line for line in text.splitlines() if "Op point" in line)
    assert header.index("Op point") < header.index("Throughput")  # the parameters, shared, are in the title
    assert all(label in text for label in ("450 W", "350 W", "300 W", AS_FOUND))
    (tmp_path / "again").mkdir()
    df = _load(
        tmp_path / "again",
        _doc([_case("matmul", MATMUL, t, w, limit=pl) for pl, (t, w) in SWEEP.items()]),
        _doc([_case("matmul", MATMUL, t * 1.01, w, limit=pl) for pl, (t, w) in SWEEP.items()], run_id="r2"),
    )
    text = render_to_text(df, width=200)
    assert "throughput by hardware, 2 run(s)" in text and text.count("(driver 570.86.15)") == 1  # one column
    assert "Op point" in text and text.count("2 run(s)") == 1 + 4  # the heading, and a row per point over both runs


def test_a_table_without_operating_points_has_no_op_column(tmp_path):
    df = _load(tmp_path, _doc([_case("matmul", MATMUL, 1e15, 700.0)]))
    assert "Op point" not in render_to_text(df, width=200)


def test_a_damaged_operating_point_names_the_field(tmp_path):
    case = _case("matmul", MATMUL, 1e15, 700.0, limit=450)
    case["operating_point"]["power_limit_w"] = "450"
    (tmp_path / "bad.json").write_text(json.dumps(_doc([case])))
    with pytest.raises(results.ResultFileError, match="operating_point.power_limit_w is '450', not a number"):
        load([tmp_path / "bad.json"])


# --- the sets --------------------------------------------------------------------------------------


def test_dominated_points_leave_the_pareto_set(power_sweep):
    (found,) = frontier(power_sweep)
    assert found.title == f"matmul 8192³ bf16 on {GPU} (driver 570.86.15)" and found.unit == "FLOP"
    assert [p.label for p in found.points] == ["300 W", "350 W", "450 W", AS_FOUND]  # ascending, as found last
    assert [p.label for p in found.pareto] == ["350 W", "450 W", AS_FOUND]  # slowest first
    points = _by_label(found)
    assert not points["300 W"].pareto and points["350 W"].pareto
    assert found.best is points["350 W"] and found.fastest is points[AS_FOUND]
    assert points["450 W"].energy_per_unit == pytest.approx(450 / 970e12)
    assert points["450 W"].seconds_per_iter == pytest.approx(1e12 / 970e12) and points["450 W"].avg_watts == 450.0
    assert found.left_out == [] and not found.nominal_only


def test_ties_both_stay_and_a_single_point_is_its_own_frontier():
    a, b = Point("a", 10.0, 1.0, None, False), Point("b", 10.0, 1.0, None, False)
    c = Point("c", 5.0, 2.0, None, False)  # dominated by both
    assert pareto_set([a, b, c]) == [a, b]
    same_speed = Point("d", 10.0, 0.9, None, False)  # as fast, less energy: beats a and b
    assert pareto_set([a, b, same_speed]) == [same_speed]
    assert pareto_set([c]) == [c]
    assert recommend([c]) == (c, c, None)


def test_single_points_are_counted_not_tabled(tmp_path):
    df = _load(tmp_path, _doc([_case("matmul", MATMUL, 1e15, 700.0), _case("matmul", {**MATMUL, "m": 4096}, 5e14, 600.0)]))
    found = frontier(df)
    assert len(found) == 2 and all(len(f.points) == 1 and f.pareto == f.points for f in found)
    assert all(f.recommended is f.points[0] and "one operating point only" in sentence(f) for f in found)
    text = frontier_to_text(found, width=160)
    assert "every case ran at one operating point only" in text and "Pareto" not in text


def test_cases_without_energy_never_enter_and_are_named(tmp_path):
    cases = [_case("matmul", MATMUL, t, w, limit=pl) for pl, (t, w) in SWEEP.items() if pl != 300]
    cases.append(_case("matmul", MATMUL, 1.2e15, None, limit=300))  # fastest, but no energy
    cases.append(_case("matmul", MATMUL, 1e15, 500.0, limit=250, status="failed", error="verification failed"))
    (found,) = frontier(_load(tmp_path, _doc(cases)))
    assert [p.label for p in found.points] == ["350 W", "450 W", AS_FOUND]
    assert [(p.label, p.why) for p in found.left_out] == [("250 W", "failed: verification failed"), ("300 W", NOT_MEASURED)]
    assert found.fastest.label == AS_FOUND  # the point without energy is nobody's reference
    text = frontier_to_text([found], width=160)
    assert "left out: 250 W (failed: verification failed), 300 W (energy not measured)" in text


def test_a_case_with_no_energy_at_all_has_no_frontier_and_says_so(tmp_path):
    df = _load(tmp_path, _doc([_case("matmul", MATMUL, t, None, limit=pl) for pl, (t, _) in SWEEP.items()]))
    (found,) = frontier(df)
    assert found.points == [] and found.recommended is None and len(found.left_out) == 4
    assert sentence(found).startswith(f"{found.title}: no frontier: no point has energy (300 W: energy not measured;")
    assert "no frontier" in frontier_to_text([found])


# --- the recommendation ------------------------------------------------------------------------------


def test_the_recommendation_under_max_slowdown(power_sweep):
    (found,) = frontier(power_sweep)
    assert found.recommended.label == "450 W" and found.reference.label == AS_FOUND
    assert found.slowdown == pytest.approx(0.03) and found.saving == pytest.approx(1 - (450 / 970) / 0.7)
    assert sentence(found) == (
        f"{found.title}: run at 450 W: 3% slower than the fastest point (as found), "
        "34% less energy per FLOP (464 fJ/FLOP vs 700 fJ/FLOP); "
        "the most efficient point (350 W, 412 fJ/FLOP) is 15% slower"
    )
    (found,) = frontier(power_sweep, max_slowdown=0.2)
    assert found.recommended.label == "350 W" and found.recommended is found.best
    (found,) = frontier(power_sweep, max_slowdown=0.0)
    assert found.recommended.label == AS_FOUND
    assert "run at as found, the fastest point: no point within 0% of its throughput uses less energy" in sentence(found)


def test_the_recommendation_respects_min_throughput_and_max_latency(power_sweep):
    (found,) = frontier(power_sweep, max_slowdown=0.2, min_throughput=900e12)
    assert found.recommended.label == "450 W"  # 350 W is within 20% but under 900 TFLOP/s
    # max latency: as found (1 ms/iter) and 450 W (1.03 ms) allowed; the fastest of them is the reference
    (found,) = frontier(power_sweep, max_slowdown=0.2, max_latency=1.1e-3)
    assert found.recommended.label == "450 W" and found.reference.label == AS_FOUND
    (found,) = frontier(power_sweep, max_slowdown=0.05, min_throughput=800e12, max_latency=1.2e-3)
    assert found.reference.label == AS_FOUND and found.recommended.label == "450 W"


def test_the_reference_is_the_fastest_point_that_meets_the_limits(tmp_path):
    """A batch sweep under a latency limit: the biggest batch is too slow per step, so the
    slowdown is measured against the fastest allowed batch, and the sentence says so."""
    rates = {1: 100.0, 2: 190.0, 4: 360.0, 8: 640.0, 16: 1000.0}  # tokens/s at 50 W
    df = _load(
        tmp_path,
        _doc(
            [_case("llm", {**TINY, "batch": b}, r, 50.0 + b, work=b, unit="token", device="cpu") for b, r in rates.items()],
            name="Test CPU",
            device="cpu",
        ),
    )
    (found,) = frontier(df, max_latency=0.0125)  # batch 8: 8 / 640 = 12.5 ms per step; batch 16: 16 ms
    assert found.reference.label == "batch=8" and found.recommended.label == "batch=8"
    assert "the fastest point with latency <= 12.5 ms" in sentence(found)


def test_nothing_qualifying_says_so(power_sweep):
    (found,) = frontier(power_sweep, min_throughput=2e15)
    assert found.recommended is None and found.reference is None
    assert found.why_none == "no point meets throughput >= 2 PFLOP/s (the fastest: 1 PFLOP/s)"
    assert sentence(found) == f"{found.title}: nothing to recommend: {found.why_none}"
    (found,) = frontier(power_sweep, max_latency=1e-4)
    assert found.why_none == "no point meets latency <= 100 us (the lowest latency: 1 ms)"
    text = frontier_to_text([found], width=160)
    assert "nothing to recommend" in text and "Recommended" in text


def test_constraints_say_their_limits():
    assert Constraints(0.05, 5e3, 0.02).limits("token") == ["throughput >= 5 ktok/s", "latency <= 20 ms"]
    assert Constraints().limits() == []


# --- operating parameters: an llm batch sweep ------------------------------------------------------


def _decode_sweep(tmp_path, limits=(None,), source="nvml_energy"):
    """Decode at batch 1..32 on a GPU: tokens/s grow with the batch, watts too; under a power
    limit a little slower at a lower wattage."""
    cases = []
    for limit in limits:
        slow = 1.0 if limit is None else 0.97
        for b in (1, 2, 4, 8, 16, 32):
            watts = min(200.0 + 15 * b, limit or 1e9)
            cases.append(
                _case(
                    "llm", {**TINY, "batch": b}, 1000.0 * b**0.8 * slow, watts, limit=limit, work=b, unit="token", source=source
                )
            )
    return _load(tmp_path, _doc(cases))


def test_a_batch_sweep_is_one_case_with_batches_as_points(tmp_path):
    df = _decode_sweep(tmp_path)
    assert list(df["operating_params"])[0] == ["batch"]
    (found,) = frontier(df)
    assert found.case == "model=tiny phase=decode seq=128 fp32" and found.unit == "token"
    assert [p.label for p in found.points] == [f"batch={b}" for b in (1, 2, 4, 8, 16, 32)]
    assert [p.operating for p in found.points][-1] == {"batch": 32}
    assert found.fastest.label == "batch=32"
    # J/token = watts / tokens/s: batch 32 at 680 W / 16 ktok/s = 42.5 mJ; batch 16 at 440 W / 9.19 ktok/s = 47.9 mJ
    assert found.best.label == "batch=32" and found.recommended.label == "batch=32"
    (found,) = frontier(df, max_latency=0.0016)  # batch 8: 8 / 5278 = 1.52 ms per step; batch 16: 16 / 9190 = 1.74 ms
    assert found.recommended.label == "batch=8"


def test_power_limits_cross_batches_in_labels(tmp_path):
    df = _decode_sweep(tmp_path, limits=(None, 300))
    (found,) = frontier(df)
    labels = [p.label for p in found.points]
    assert labels[:2] == ["300 W batch=1", "300 W batch=2"] and labels[-1] == f"{AS_FOUND} batch=32"
    assert len(found.points) == 12
    assert found.recommended.label == "300 W batch=32"  # 3% slower, 300 W instead of 680 W
    assert "less energy per token" in sentence(found)


def test_medians_over_runs(tmp_path):
    docs = [
        _doc([_case("matmul", MATMUL, 1e15 * f, w, limit=pl) for pl, w in ((None, 700.0), (450, 450.0))], run_id=str(f))
        for f in (0.9, 1.0, 1.2)
    ]
    found = frontier(_load(tmp_path, *docs))[0]
    points = _by_label(found)
    assert points[AS_FOUND].throughput == pytest.approx(1e15) and points[AS_FOUND].runs == 3
    assert points["450 W"].energy_per_unit == pytest.approx(450.0 / 1e15)


def test_nominal_energy_only_says_the_fastest_always_wins(tmp_path):
    df = _decode_sweep(tmp_path, source="nominal")
    (found,) = frontier(df)
    assert found.nominal_only and all(p.estimate for p in found.points)
    text = frontier_to_text([found], width=250)
    assert NOMINAL_NOTE.split(":")[0] in text and "the fastest point always wins" in text
    assert "~" in text and "~ an estimate from a nominal wattage" in text
    assert "(~" in sentence(found) or "~" in sentence(found)


# --- rendering ---------------------------------------------------------------------------------------


def test_the_table_marks_pareto_best_and_recommended(power_sweep):
    found = frontier(power_sweep)
    buffer = io.StringIO()
    render_frontier(found, Console(file=buffer, width=200, color_system=None))
    text = buffer.getvalue()
    assert text.startswith(
        "energy-optimal frontier by case and hardware (medians over runs); recommended: the least "
        "energy per unit of work within 5% of the fastest point's throughput"
    )
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 5}
    header = next(line for line in text.splitlines() if "Pareto" in line)
    assert all(name in header for name in ("Point", "Throughput", "Energy/work", "Latency/iter", "Best", "Recommended"))

    def marks(label):
        return [cell.strip() for cell in rows[label].split("│")[-4:-1]]  # Pareto, Best, Recommended

    assert marks("300 W") == ["", "", ""]
    assert marks("350 W") == ["✓", "✓", ""]
    assert marks("450 W") == ["✓", "", "✓"]
    assert marks(AS_FOUND) == ["✓", "", ""]
    assert "970 TFLOP/s" in rows["450 W"] and "464 fJ/FLOP" in rows["450 W"] and "1.03 ms" in rows["450 W"]
    assert "run at 450 W: 3% slower than the fastest point (as found)" in text


def test_the_table_fits_a_narrow_terminal(tmp_path):
    text = frontier_to_text(frontier(_decode_sweep(tmp_path, limits=(None, 300))), width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "300 W batch=32" in text.replace("\n", " ") or "300 W" in text


# --- the command line ----------------------------------------------------------------------------------


def test_cli_frontier_and_its_flags(power_sweep, tmp_path, capsys):
    folder = str(tmp_path)
    assert main(["report", folder, "--frontier"]) == 0
    out = capsys.readouterr().out
    assert "run at 450 W: 3% slower" in out and "Pareto" in out
    assert main(["report", folder, "--frontier", "--max-slowdown", "20"]) == 0
    assert "run at 350 W: 15% slower" in capsys.readouterr().out
    assert main(["report", folder, "--frontier", "--max-slowdown", "20", "--min-throughput", "9e14"]) == 0
    assert "run at 450 W" in capsys.readouterr().out
    assert main(["report", folder, "--frontier", "--max-latency", "0.0001"]) == 0
    assert "nothing to recommend: no point meets latency <= 100 us" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, says",
    [
        (["--frontier", "--max-slowdown", "150"], "--max-slowdown: '150' must be a percentage from 0 to 100"),
        (["--frontier", "--max-slowdown", "fast"], "'fast' is not a percentage"),
        (["--frontier", "--min-throughput", "5G"], "'5G' is not a number of work units per second"),
        (["--frontier", "--min-throughput", "-1"], "must be a number of work units per second > 0"),
        (["--frontier", "--max-latency", "0"], "must be a number of seconds > 0"),
        (["--max-slowdown", "10"], "--max-slowdown applies to --frontier only"),
        (["--frontier", "--format", "csv"], "--format csv is not valid with it (valid: table)"),
    ],
)
def test_cli_bad_values_exit_2_with_one_line(power_sweep, tmp_path, capsys, args, says):
    assert main(["report", str(tmp_path), *args]) == 2
    captured = capsys.readouterr()
    assert says in captured.err and len(captured.err.strip().splitlines()) == 1 and captured.out == ""


def test_compare_matches_cases_at_the_same_operating_point_only(tmp_path, capsys):
    base = tmp_path / "base.json"
    base.write_text(json.dumps(_doc([_case("matmul", MATMUL, 1e15, 700.0), _case("matmul", MATMUL, 9.7e14, 450.0, limit=450)])))
    current = tmp_path / "current.json"
    current.write_text(json.dumps(_doc([_case("matmul", MATMUL, 9.7e14, 450.0, limit=450)], run_id="r2")))
    assert main(["compare", str(base), str(current)]) == 0
    out = capsys.readouterr()
    assert "1 unchanged, 1 missing" in out.err  # 450 W against 450 W; the as-found case is not compared with it


# --- the picture -------------------------------------------------------------------------------------------


def test_plot_draws_points_pareto_and_the_recommendation(tmp_path, power_sweep):
    pytest.importorskip("matplotlib")
    from bench.report.plot import plot_frontier

    (ax,) = plot_frontier(frontier(power_sweep)).axes
    by_gid = {}
    for line in ax.get_lines():
        by_gid.setdefault(line.get_gid(), []).append(line)
    (pareto,) = by_gid["pareto"]
    assert list(pareto.get_xdata()) == pytest.approx([0.85, 0.97, 1.0])  # PFLOP/s, slowest first
    assert list(pareto.get_ydata()) == pytest.approx([350 / 850e12 * 1e12, 450 / 970e12 * 1e12, 0.7])  # pJ/FLOP
    assert pareto.get_linestyle() == "-" and pareto.get_label().replace("\n", " ") == f"{GPU} (driver 570.86.15)"
    (points,) = by_gid["points"]
    assert sorted(points.get_xdata()) == pytest.approx([0.7, 0.85, 0.97, 1.0])
    (rec,) = by_gid["recommended"]
    assert list(rec.get_xdata()) == pytest.approx([0.97]) and rec.get_markerfacecolor() == "none"
    assert any(t.get_text() == "recommended: 450 W" for t in ax.texts)
    assert {t.get_text() for t in ax.texts} >= {"300 W", "350 W", "450 W", AS_FOUND}
    assert ax.get_xlabel() == "throughput, median over runs (PFLOP/s)"
    assert ax.get_ylabel() == "energy per FLOP (device energy), median over runs (pJ/FLOP)"
    assert ax.get_xscale() == ax.get_yscale() == "linear"  # a power sweep spans a few tens of percent
    fig = ax.figure
    fig.canvas.draw()
    assert ax.xaxis.get_offset_text().get_text() == "" and ax.yaxis.get_offset_text().get_text() == ""
    assert "energy-optimal frontier" in ax.get_title()
    assert "recommended" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_plot_marks_estimates_hollow_dashed_and_labelled(tmp_path):
    pytest.importorskip("matplotlib")
    from bench.report.plot import ESTIMATE_NOTE, plot_frontier

    (ax,) = plot_frontier(frontier(_decode_sweep(tmp_path, source="nominal"))).axes
    (pareto,) = [line for line in ax.get_lines() if line.get_gid() == "pareto"]
    assert pareto.get_linestyle() == "--" and pareto.get_markerfacecolor() == "none"
    assert ESTIMATE_NOTE in pareto.get_label()
    assert not [line for line in ax.get_lines() if line.get_gid() == "points-measured"]  # no filled markers
    assert "proportional to time" in ax.get_title().replace("\n", " ")
    assert ax.get_ylabel().endswith("(mJ/tok)")  # 215 mJ/token at batch 1 down to 42.5 at batch 32


def test_plot_one_panel_per_unit_one_colour_per_hardware(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_rgb

    from bench.report.plot import plot_frontier

    gpu = _doc(
        [_case("matmul", MATMUL, t, w, limit=pl) for pl, (t, w) in SWEEP.items()]
        + [_case("llm", {**TINY, "batch": b}, 1e3 * b, 300.0, work=b, unit="token") for b in (1, 4)]
    )
    other = _doc(
        [_case("matmul", MATMUL, t * 0.8, w * 0.9, limit=pl) for pl, (t, w) in SWEEP.items()], name="NVIDIA H200", run_id="r2"
    )
    fig = plot_frontier(frontier(_load(tmp_path, gpu, other)))
    flop, token = fig.axes
    assert "(PFLOP/s)" in flop.get_xlabel() and "(ktok/s)" in token.get_xlabel()
    colours = {
        line.get_label().replace("\n", " "): to_rgb(line.get_color()) for line in flop.get_lines() if line.get_gid() == "pareto"
    }
    assert len(colours) == 2 and len(set(colours.values())) == 2
    (llm_line,) = [line for line in token.get_lines() if line.get_gid() == "pareto"]
    assert to_rgb(llm_line.get_color()) == colours[f"{GPU} (driver 570.86.15)"]


def test_plot_with_nothing_to_draw_is_a_usage_error(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    _load(tmp_path, _doc([_case("matmul", MATMUL, 1e15, None)]))
    assert main(["report", str(tmp_path), "--frontier", "--plot", str(tmp_path / "f.png")]) == 2
    assert "nothing to draw" in capsys.readouterr().err


def test_cli_writes_the_frontier_plot(power_sweep, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "frontier.png"
    assert main(["report", str(tmp_path / "run0.json"), "--frontier", "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
