"""`report --plot`: the Figure that bench.report.plot.plot builds, inspected panel by panel."""

import json
import subprocess
import sys

import pandas as pd
import pytest

pytest.importorskip("matplotlib")

from matplotlib.colors import to_rgb

from bench import results
from bench.errors import UsageError
from bench.report.load import COLUMNS, load
from bench.report.plot import ESTIMATE_NOTE, MAX_TRACE_LEGEND, plot, save

MATMUL = {"m": 8192, "n": 8192, "k": 8192, "dtype": "bfloat16"}
ATTENTION = {
    "batch": 8,
    "heads": 32,
    "seq": 4096,
    "head_dim": 128,
    "causal": True,
    "pass": "forward+backward",
    "backend": "flash",
    "dtype": "bfloat16",
}
TRIAD = {"op": "triad", "size": 268435456, "dtype": "float32"}


def _doc(device, name, cases, limit=None):
    return {
        "schema": results.SCHEMA,
        "run": {
            "id": name,
            "started_at": "2026-11-24T00:00:00Z",
            "finished_at": None,
            "wattbench_version": "0",
            "command": "t",
            "status": "complete",
        },
        "host": {"hostname": "h", "os": "Linux", "python": "3.11", "torch": "2.13", "driver": None},
        "devices": [
            {"id": device, "kind": "cpu" if device == "cpu" else "cuda", "name": name, "memory_bytes": 1, "power_limit_w": limit}
        ],
        "cases": cases,
    }


def _case(device, workload, params, unit, throughput, watts=None, source="nvml_energy", trace=True):
    """A successful case; `watts` None: no energy (no efficiency); `source` "nominal": an estimate,
    whose trace (as the run writes it) is the nominal wattage, constant."""
    energy = None
    if watts is not None:
        samples = [[i * 0.1, watts if source == "nominal" else watts + i % 3] for i in range(20)] if trace else []
        energy = {"joules": watts * 2.0, "avg_watts": watts, "peak_watts": watts, "source": source, "trace": samples}
    return {
        "id": f"{workload}@{device}",
        "workload": workload,
        "params": params,
        "device": device,
        "status": "ok",
        "error": None,
        "work_unit": unit,
        "work_per_iter": 1e9,
        "raw_seconds": [1e9 / throughput] * 3,
        "seconds_per_iter": {"median": 1e9 / throughput, "cv": 0.01},
        "throughput": {"median": throughput},
        "energy": energy,
        "efficiency": throughput / watts if watts else None,
        "flags": [],
    }


def _write(folder, name, doc):
    (folder / f"{name}.json").write_text(json.dumps(doc))


@pytest.fixture
def measured(tmp_path):
    """Two GPUs with measured energy and power traces, and a CPU whose energy is a nominal estimate."""
    tmp_path = tmp_path / "measured"
    tmp_path.mkdir()
    for device, name, scale, watts in (("cuda:0", "NVIDIA H100 80GB HBM3", 1.0, 700), ("cuda:0", "NVIDIA H200", 0.9, 500)):
        _write(
            tmp_path,
            name.replace(" ", "_"),
            _doc(
                device,
                name,
                [
                    _case(device, "matmul", MATMUL, "FLOP", 700e12 * scale, watts),  # ~1e12 FLOP/J
                    _case(device, "attention", ATTENTION, "FLOP", 400e12 * scale, watts),
                    _case(device, "membw", TRIAD, "byte", 3e12 * scale, watts * 0.6),  # ~7e9 B/J
                ],
                limit=watts,
            ),
        )
    _write(
        tmp_path,
        "cpu",
        _doc(
            "cpu",
            "AMD EPYC 9654",
            [
                _case("cpu", "matmul", MATMUL, "FLOP", 2e12, 280, source="nominal"),
                _case("cpu", "membw", TRIAD, "byte", 2e11, 280, source="nominal"),
            ],
        ),
    )
    return load([tmp_path])


@pytest.fixture
def unmeasured(tmp_path):
    """A CPU run without any energy: throughput only."""
    tmp_path = tmp_path / "unmeasured"
    tmp_path.mkdir()
    _write(
        tmp_path,
        "cpu",
        _doc(
            "cpu",
            "AMD EPYC",
            [
                _case("cpu", "matmul", MATMUL, "FLOP", 3e11),
                _case("cpu", "membw", TRIAD, "byte", 3.5e10),
            ],
        ),
    )
    return load([tmp_path])


def _frame(rows):
    """A DataFrame with load's columns from a few dicts (what is not given is None)."""
    return pd.DataFrame([{c: row.get(c) for c in COLUMNS} for row in rows], columns=COLUMNS)


def _bar_axes(fig):
    return [ax for ax in fig.axes if ax.get_title() != "power over time"]


def _legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _tick_labels(ax):
    return [t.get_text() for t in ax.get_yticklabels()]


def test_one_panel_per_unit_and_a_power_panel_when_traced(measured):
    fig = plot(measured)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 3
    assert titles[0] == "matmul, attention: throughput per watt (FLOP)"
    assert titles[1] == "membw: throughput per watt (bytes)"
    assert titles[2] == "power over time"
    power = fig.axes[2]
    assert power.get_xlabel().endswith("(s)") and power.get_ylabel() == "power, device boundary (W)"
    assert len(power.get_lines()) == 6  # 3 cases x 2 GPUs; the CPU's nominal trace is no measurement
    assert not any("EPYC" in text for text in _legend_texts(power))


def test_power_is_drawn_at_the_times_it_was_sampled(tmp_path):
    """The trace's [t, w] pairs keep their times: samples 0.1 s apart, a 2 s gap, then more
    (a sampler that stalled) are drawn where they were taken, not spread evenly."""
    times = [0.0, 0.1, 0.2, 2.2, 2.3]
    case = _case("cuda:0", "matmul", MATMUL, "FLOP", 7e14, 700)
    case["energy"]["trace"] = [[t, 700.0 + k] for k, t in enumerate(times)]
    _write(tmp_path, "h100", _doc("cuda:0", "NVIDIA H100 80GB HBM3", [case]))
    df = load([tmp_path])
    assert df.iloc[0]["power_trace_s"] == times and df.iloc[0]["power_trace_w"] == [700.0, 701.0, 702.0, 703.0, 704.0]
    (line,) = plot(df).axes[-1].get_lines()
    assert list(line.get_xdata()) == times and list(line.get_ydata()) == [700.0, 701.0, 702.0, 703.0, 704.0]


def test_node_energy_says_its_boundary_on_every_axis(tmp_path):
    """Figures whose joules are the whole node's (boundary node) say so on the bars' and the power
    panel's axes, as device figures say theirs."""
    case = _case("cuda:0", "matmul", MATMUL, "FLOP", 7e14, 1400)
    case["energy"]["boundary"] = "node"
    case["energy"]["trace"] = [[0.0, 1400.0], [1.0, 1410.0]]
    _write(tmp_path, "node", _doc("cuda:0", "NVIDIA H100 80GB HBM3", [case]))
    bars, power = plot(load([tmp_path])).axes
    assert bars.get_xlabel().startswith("work per joule (node energy)") and power.get_ylabel() == "power, node boundary (W)"


def test_estimates_alone_draw_no_power_panel(tmp_path):
    _write(tmp_path, "cpu", _doc("cpu", "AMD EPYC 9654", [_case("cpu", "matmul", MATMUL, "FLOP", 2e12, 5, source="nominal")]))
    df = load([tmp_path])
    assert len(df.iloc[0]["power_trace_w"]) == 20  # the file has the (constant) trace ...
    fig = plot(df)
    assert [ax.get_title() for ax in fig.axes] == ["matmul: throughput per watt (FLOP)"]  # ... not drawn as measured


def test_no_power_panel_without_traces(unmeasured):
    fig = plot(unmeasured)
    assert len(fig.axes) == 2
    assert all("power" not in ax.get_title() for ax in fig.axes)


def test_units_are_never_mixed_and_labels_carry_an_si_prefix(measured, unmeasured):
    flop, byte, _ = plot(measured).axes
    assert flop.get_xlabel().endswith("(TFLOP/J)")  # ~1e12 FLOP/J
    assert flop.get_xlabel().startswith("work per joule (device energy)")  # the boundary is said
    assert byte.get_xlabel().endswith("(GB/J)")  # ~7e9 B/J
    # the plotted numbers are the scaled ones: H100 matmul 700e12 / 700 W = 1 TFLOP/J
    widths = sorted(round(p.get_width(), 3) for p in flop.patches)
    assert 1.0 in widths and max(widths) < 1000
    flop, byte = plot(unmeasured).axes
    assert flop.get_xlabel().endswith("(GFLOP/s)")  # 3e11 FLOP/s
    assert byte.get_xlabel().endswith("(GB/s)")  # 3.5e10 B/s
    assert sorted(round(p.get_width(), 3) for p in flop.patches) == [300.0]


def test_no_axis_has_offset_text(measured, unmeasured):
    for df in (measured, unmeasured):
        fig = plot(df)
        fig.canvas.draw()
        for ax in fig.axes:
            assert ax.xaxis.get_offset_text().get_text() == ""
            assert ax.yaxis.get_offset_text().get_text() == ""


def test_without_energy_the_panel_shows_throughput_and_says_so(unmeasured):
    flop, byte = plot(unmeasured).axes
    assert flop.get_title() == "matmul: throughput (FLOP; energy not measured)"
    assert "energy not measured" in byte.get_title()
    assert flop.get_xlabel().startswith("throughput")


def test_estimates_are_hatched_and_the_legend_says_so(measured):
    flop = plot(measured).axes[0]
    labels = _legend_texts(flop)
    estimated = [label for label in labels if ESTIMATE_NOTE in label]
    assert len(estimated) == 1 and estimated[0].startswith("AMD EPYC 9654")
    assert ESTIMATE_NOTE == "(estimate: nominal watts)"
    for container in flop.containers:
        hatches = {bar.get_hatch() for bar in container.patches}
        if ESTIMATE_NOTE in container.get_label():
            assert hatches == {"//"}
        elif hasattr(container, "patches"):
            assert hatches == {None}


def test_case_labels_are_whole(measured):
    flop = plot(measured).axes[0]
    expected = measured.drop_duplicates(["workload", "params"])
    expected = [f"{w} {p}" for w, p in zip(expected["workload"], expected["params"], strict=True) if w != "membw"]
    assert len(expected) == 2 and "pass=forward+backward backend=flash" in expected[1]
    labels = _tick_labels(flop)
    assert [label.replace("\n", " ") for label in labels] == expected  # every word, in order
    assert "\n" in labels[1]  # the long one is wrapped, not cut


def test_the_figure_grows_with_cases(tmp_path):
    def height(n):
        folder = tmp_path / str(n)
        folder.mkdir()
        cases = [_case("cpu", "matmul", {**MATMUL, "m": 256 * (i + 1)}, "FLOP", 1e11 * (i + 1), 100) for i in range(n)]
        _write(folder, "cpu", _doc("cpu", "AMD EPYC", cases))
        return plot(load([folder])).get_size_inches()[1]

    assert height(12) > height(2) + 3


def test_mixed_energy_marks_the_hardware_without_energy(tmp_path):
    _write(tmp_path, "gpu", _doc("cuda:0", "NVIDIA H200", [_case("cuda:0", "matmul", MATMUL, "FLOP", 6e14, 500)]))
    _write(tmp_path, "cpu", _doc("cpu", "AMD EPYC", [_case("cpu", "matmul", MATMUL, "FLOP", 2e12)]))
    (flop, _power) = plot(load([tmp_path])).axes
    assert "throughput per watt" in flop.get_title()
    assert any(t.get_text().strip() == "energy not measured" for t in flop.texts)
    assert "AMD EPYC\n(energy not measured)" in _legend_texts(flop)


def test_a_machine_keeps_its_colour_across_panels(measured):
    flop, byte, _ = plot(measured).axes

    def colours(ax):
        return {c.get_label(): c.patches[0].get_facecolor()[:3] for c in ax.containers if c.patches}

    assert colours(flop) == colours(byte) and len(set(colours(flop).values())) == 3


def test_tokens_get_their_own_panel():
    rows = [
        {
            "workload": "matmul",
            "params": "4096³ bf16",
            "hardware": "H200",
            "status": "ok",
            "work_unit": "FLOP",
            "throughput": 5e14,
            "efficiency": 1e12,
            "energy_estimate": False,
            "power_trace_w": [],
        },
        {
            "workload": "llm_decode",
            "params": "batch=8",
            "hardware": "H200",
            "status": "ok",
            "work_unit": "token",
            "throughput": 5e3,
            "efficiency": 12.0,
            "energy_estimate": False,
            "power_trace_w": [],
        },
        {
            "workload": "llm_decode",
            "params": "batch=8",
            "hardware": "H200",
            "status": "failed",
            "work_unit": "token",
            "throughput": None,
            "efficiency": None,
            "energy_estimate": None,
            "power_trace_w": [],
        },
    ]
    fig = plot(_frame(rows))
    assert [ax.get_xlabel().rsplit("(", 1)[1] for ax in fig.axes] == ["TFLOP/J)", "tok/J)"]


def test_power_legend_names_at_most_twelve():
    rows = [
        {
            "workload": "matmul",
            "params": f"m={i}",
            "hardware": "H200",
            "status": "ok",
            "work_unit": "FLOP",
            "throughput": 1e12,
            "efficiency": 1e10,
            "energy_estimate": False,
            "energy_j": 200.0,
            "avg_watts": 100.0,
            "power_trace_s": [0.0, 1.0, 2.0],
            "power_trace_w": [100.0, 101.0, 99.0],
        }
        for i in range(20)
    ]
    power = plot(_frame(rows)).axes[-1]
    assert len(power.get_lines()) == 20
    assert len(_legend_texts(power)) == MAX_TRACE_LEGEND
    assert "12 of 20" in power.get_legend().get_title().get_text()
    assert max(power.get_lines()[0].get_xdata()) == pytest.approx(2.0)  # the last sample's time


def test_save_checks_the_suffix(measured, tmp_path):
    fig = plot(measured)
    with pytest.raises(UsageError, match=r"\.png, \.svg, \.pdf"):
        save(fig, tmp_path / "p.jpg")
    with pytest.raises(UsageError, match="no suffix"):
        save(fig, tmp_path / "p")
    save(fig, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    save(fig, tmp_path / "p.PDF")
    assert (tmp_path / "p.PDF").read_bytes()[:4] == b"%PDF"
    save(fig, tmp_path / "p.svg")
    assert b"<svg" in (tmp_path / "p.svg").read_bytes()[:500]
    with pytest.raises(UsageError, match="cannot write"):
        save(fig, tmp_path / "no" / "such" / "dir.png")


def test_nothing_to_draw_is_a_usage_error():
    rows = [{"workload": "matmul", "params": "", "hardware": "cpu", "status": "failed", "work_unit": "FLOP"}]
    with pytest.raises(UsageError, match="nothing to draw"):
        plot(_frame(rows))


def test_missing_matplotlib_says_how_to_install(unmeasured, without_matplotlib):
    with pytest.raises(UsageError, match=r"pip install 'wattbench\[plot\]'"):
        plot(unmeasured)


def test_cli_writes_the_plot(measured, tmp_path):
    from bench.cli import main

    folder = tmp_path / "run"
    folder.mkdir()
    _write(folder, "cpu", _doc("cpu", "AMD EPYC", [_case("cpu", "matmul", MATMUL, "FLOP", 3e11)]))
    out = tmp_path / "p.png"
    assert main(["report", str(folder), "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["report", str(folder), "--plot", str(tmp_path / "p.gif")]) == 2


def test_plot_module_stays_on_the_reading_side():
    code = (
        "import sys, bench.report.plot; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('bench.measure', 'workloads', 'matplotlib'))]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # matplotlib too: imported only when a plot is drawn


# ---------------------------------------------------------------------------------------------
# Energy per token against batch (llm batch sweeps)

LLM = {"model": "llama-3-8b", "dtype": "bfloat16", "phase": "decode", "seq": 1024, "run_layers": 32}
ITERATIONS = 10


def _llm_case(device, batch, tokens_per_s, watts=None, source="nvml_energy", status="ok", **params):
    """A decode case of `batch` tokens per iteration at `tokens_per_s`; its energy (when `watts`)
    is what the run writes: joules over the timed window (3 repeats of ITERATIONS iterations) at
    `watts`, efficiency = throughput / watts."""
    params = {**LLM, "batch": batch, **params}
    tokens = batch if params["phase"] == "decode" else batch * params["seq"]
    seconds = tokens / tokens_per_s
    energy = None
    if watts is not None:
        energy = {"joules": watts * seconds * ITERATIONS * 3, "avg_watts": watts, "peak_watts": watts, "source": source}
    return {
        "id": f"llm({batch},{params['phase']})@{device}",
        "workload": "llm",
        "params": params,
        "device": device,
        "status": status,
        "error": None if status == "ok" else "verification failed",
        "work_unit": "token",
        "work_per_iter": tokens,
        "iterations": ITERATIONS,
        "raw_seconds": [seconds] * 3,
        "seconds_per_iter": {"median": seconds, "cv": 0.0},
        "throughput": {"median": tokens_per_s},
        "energy": energy,
        "efficiency": tokens_per_s / watts if watts else None,
        "flags": [],
    }


def _joules_per_token(case):
    """What the file says: the window's joules over the tokens processed in it."""
    return case["energy"]["joules"] / (case["work_per_iter"] * case["iterations"] * len(case["raw_seconds"]))


def _sweep_axes(fig):
    return [ax for ax in fig.axes if "against batch" in ax.get_title()]


BATCHES = (1, 8, 64)


@pytest.fixture
def decode_sweep(tmp_path):
    """A decode batch sweep on two GPUs with measured energy: (frame, {hardware: [cases]})."""
    gpus = {"NVIDIA H100 80GB HBM3": (700, (1e3, 7e3, 4e4)), "NVIDIA H200": (600, (1.2e3, 9e3, 6e4))}
    cases = {}
    for name, (watts, rates) in gpus.items():
        cases[name] = [_llm_case("cuda:0", b, r, watts) for b, r in zip(BATCHES, rates, strict=True)]
        _write(tmp_path, name.replace(" ", "_"), _doc("cuda:0", name, cases[name], limit=watts))
    df = load([tmp_path])
    return df, {name: cases[name] for name in gpus}  # the power limit is no part of the hardware's name


def test_a_decode_sweep_draws_joules_per_token_against_batch(decode_sweep):
    df, cases = decode_sweep
    fig = plot(df)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["llm: throughput per watt (tokens)", "llm llama-3-8b decode seq=1024 bf16: energy per token against batch"]
    (sweep,) = _sweep_axes(fig)
    lines = sweep.get_lines()
    assert [line.get_label() for line in lines] == list(cases) == _legend_texts(sweep)
    assert sweep.get_ylabel().endswith("(mJ/tok)")  # 0.7 J/token down to 12 mJ/token
    assert "(device energy)" in sweep.get_ylabel()
    for line, hardware in zip(lines, cases, strict=True):
        assert list(line.get_xdata()) == list(BATCHES)
        expected = [_joules_per_token(case) * 1e3 for case in cases[hardware]]
        assert list(line.get_ydata()) == pytest.approx(expected)
        assert line.get_linestyle() == "-" and line.get_marker() not in (None, "None", "")
    assert lines[0].get_ydata()[0] == pytest.approx(700.0)  # H100 at batch 1: 700 W / 1000 tok/s = 0.7 J
    assert sweep.get_xscale() == "log" and sweep.xaxis.get_transform().base == 2
    assert list(sweep.get_xticks()) == list(BATCHES)
    assert [t.get_text() for t in sweep.get_xticklabels()] == ["1", "8", "64"]
    fig.canvas.draw()
    assert sweep.yaxis.get_offset_text().get_text() == "" and sweep.xaxis.get_offset_text().get_text() == ""
    bars, _ = fig.axes  # each machine keeps its colour from the bar panel
    bar_colours = {c.get_label(): c.patches[0].get_facecolor()[:3] for c in bars.containers}
    assert {line.get_label(): to_rgb(line.get_color()) for line in lines} == bar_colours
    assert len(set(bar_colours.values())) == 2


def test_a_single_batch_draws_no_sweep_panel(tmp_path):
    """One batch per group (seq differs, so batch 1 and batch 8 are no sweep) on two machines."""
    for name in ("NVIDIA H100 80GB HBM3", "NVIDIA H200"):
        _write(
            tmp_path,
            name.replace(" ", "_"),
            _doc("cuda:0", name, [_llm_case("cuda:0", 1, 1e3, 700, seq=512), _llm_case("cuda:0", 8, 7e3, 700, seq=1024)]),
        )
    fig = plot(load([tmp_path]))
    assert _sweep_axes(fig) == [] and [ax.get_title() for ax in fig.axes] == ["llm: throughput per watt (tokens)"]


def test_estimated_energy_is_a_dashed_line_labelled_estimate(tmp_path):
    _write(tmp_path, "h200", _doc("cuda:0", "NVIDIA H200", [_llm_case("cuda:0", b, 1e3 * b, 600) for b in BATCHES]))
    _write(tmp_path, "cpu", _doc("cpu", "AMD EPYC 9654", [_llm_case("cpu", b, 10.0 * b, 280, source="nominal") for b in BATCHES]))
    (sweep,) = _sweep_axes(plot(load([tmp_path])))
    lines = {line.get_label().split("\n")[0]: line for line in sweep.get_lines()}
    measured, estimate = lines["NVIDIA H200"], lines["AMD EPYC 9654"]
    assert measured.get_linestyle() == "-" and ESTIMATE_NOTE not in measured.get_label()
    assert estimate.get_linestyle() == "--"
    assert estimate.get_label() == f"AMD EPYC 9654\n{ESTIMATE_NOTE}" and "estimate" in estimate.get_label()
    assert list(estimate.get_ydata()) == pytest.approx([28.0, 3.5, 0.4375])  # 280 W / (10 x batch tok/s)
    assert sweep.get_ylabel().endswith("(J/tok)")


def test_failed_cases_are_left_out_of_the_sweep(tmp_path):
    """A failed case keeps its numbers in the file (verification failed after timing): not drawn."""
    cases = [
        _llm_case("cuda:0", 1, 1e3, 700),
        _llm_case("cuda:0", 8, 7e3, 700),
        _llm_case("cuda:0", 64, 9e9, 700, status="failed"),
    ]
    _write(tmp_path, "h100", _doc("cuda:0", "NVIDIA H100", cases))
    (sweep,) = _sweep_axes(plot(load([tmp_path])))
    (line,) = sweep.get_lines()
    assert list(line.get_xdata()) == [1, 8] and list(sweep.get_xticks()) == [1, 8]
    assert list(line.get_ydata()) == pytest.approx([700.0, 100.0])  # mJ/token
    folder = tmp_path / "one"
    folder.mkdir()
    _write(folder, "h100", _doc("cuda:0", "NVIDIA H100", [cases[0], cases[2]]))
    assert _sweep_axes(plot(load([folder]))) == []  # one batch left: no sweep


def test_the_sweep_takes_the_median_over_runs(tmp_path):
    """Three runs of the same sweep: the point is 1 / the median tokens per joule, as the tables'
    energy per work."""
    for run, watts in enumerate((500, 700, 650)):
        _write(tmp_path, f"run{run}", _doc("cuda:0", "NVIDIA H100", [_llm_case("cuda:0", b, 1e3 * b, watts) for b in (1, 2)]))
    (sweep,) = _sweep_axes(plot(load([tmp_path])))
    (line,) = sweep.get_lines()
    assert list(line.get_ydata()) == pytest.approx([650.0, 325.0])  # median 650 W / (1000 x batch tok/s), in mJ


def test_several_sweeps_name_their_parameters(tmp_path):
    cases = [_llm_case("cuda:0", b, 1e3 * b, 700) for b in BATCHES]
    cases += [_llm_case("cuda:0", b, 2e4 * b, 700, phase="prefill", seq=2048) for b in (1, 4)]
    _write(tmp_path, "h100", _doc("cuda:0", "NVIDIA H100", cases))
    (sweep,) = _sweep_axes(plot(load([tmp_path])))
    assert sweep.get_title() == "llm: energy per token against batch"
    labels = [line.get_label() for line in sweep.get_lines()]
    assert labels == ["NVIDIA H100 · llama-3-8b decode\nseq=1024 bf16", "NVIDIA H100 · llama-3-8b prefill\nseq=2048 bf16"]
    decode, prefill = sweep.get_lines()
    assert list(prefill.get_xdata()) == [1, 4] and list(sweep.get_xticks()) == [1, 4, 8, 64]
    assert decode.get_marker() != prefill.get_marker() and decode.get_color() == prefill.get_color()


def test_a_sweep_without_energy_shows_throughput_and_says_so(tmp_path):
    _write(tmp_path, "cpu", _doc("cpu", "AMD EPYC", [_llm_case("cpu", b, 10.0 * b) for b in BATCHES]))
    (sweep,) = _sweep_axes(plot(load([tmp_path])))
    assert sweep.get_title().replace("\n", " ") == (
        "llm llama-3-8b decode seq=1024 bf16: throughput against batch (tokens; energy not measured)"
    )
    assert sweep.get_ylabel() == "throughput, median over runs (tok/s)"
    assert list(sweep.get_lines()[0].get_ydata()) == pytest.approx([10.0, 80.0, 640.0])


def test_a_machine_without_energy_is_named_in_the_sweep_legend(tmp_path):
    _write(tmp_path, "gpu", _doc("cuda:0", "NVIDIA H200", [_llm_case("cuda:0", b, 1e3 * b, 600) for b in BATCHES]))
    _write(tmp_path, "cpu", _doc("cpu", "AMD EPYC", [_llm_case("cpu", b, 10.0 * b) for b in BATCHES]))
    (sweep,) = _sweep_axes(plot(load([tmp_path])))
    assert [line.get_label() for line in sweep.get_lines()] == ["NVIDIA H200"]  # nothing drawn for the CPU
    assert _legend_texts(sweep) == ["NVIDIA H200", "AMD EPYC\n(energy not measured)"]


def test_the_sweep_panel_reads_frames_without_params():
    """A frame whose rows lack params_dict (older callers, hand-built frames) draws no sweep."""
    rows = [
        {
            "workload": "llm",
            "params": "batch=8",
            "hardware": "H200",
            "status": "ok",
            "work_unit": "token",
            "throughput": 5e3,
            "efficiency": 12.0,
            "energy_estimate": False,
            "power_trace_w": [],
        }
    ]
    assert _sweep_axes(plot(_frame(rows))) == []
