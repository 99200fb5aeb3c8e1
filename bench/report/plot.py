"""`wattbench report --plot FILE.png`: power over time per case, and throughput per watt by
hardware. matplotlib is an optional extra (`pip install wattbench[plot]`)."""

from __future__ import annotations

import pandas as pd

from bench.errors import UsageError


def plot(df: pd.DataFrame, path: str) -> None:
    """Draw two panels into `path`: the power trace of every case with one, and bars of the
    median throughput per watt of each case on each hardware (estimates hatched)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'wattbench[plot]' (or pip install matplotlib)") from None
    if not path.lower().endswith((".png", ".svg", ".pdf")):
        raise UsageError(f"--plot {path!r}: give a .png, .svg or .pdf file name")

    ok = df[df["status"] == "ok"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), constrained_layout=True)
    traced = ok[ok["power_trace_w"].map(lambda t: isinstance(t, list) and len(t) > 1)]
    for row in traced.itertuples(index=False):
        watts = row.power_trace_w
        span = row.energy_j / row.avg_watts if row.avg_watts else float(len(watts))
        times = [span * i / (len(watts) - 1) for i in range(len(watts))]
        top.plot(times, watts, label=f"{row.workload}({row.params}) {row.hardware}"[:80], linewidth=1)
    top.set_xlabel("seconds into the timed window")
    top.set_ylabel("power (W)")
    top.set_title("Power over time" if len(traced) else "Power over time (no traces in these results)")
    if len(traced) and len(traced) <= 12:
        top.legend(fontsize=7)

    eff = ok.dropna(subset=["efficiency"])
    if len(eff):
        table = eff.groupby(["workload", "params", "hardware"], sort=False)["efficiency"].median().unstack("hardware")
        labels = [f"{w}({p})"[:40] for w, p in table.index]
        width = 0.8 / max(1, len(table.columns))
        for i, hardware in enumerate(table.columns):
            estimate = bool(eff[eff["hardware"] == hardware]["energy_estimate"].fillna(False).any())
            xs = [x + i * width for x in range(len(table))]
            bottom.bar(xs, table[hardware].fillna(0).to_numpy(), width, label=hardware + (" (estimate)" if estimate else ""),
                       hatch="//" if estimate else None)
        bottom.set_xticks([x + width * (len(table.columns) - 1) / 2 for x in range(len(table))], labels, rotation=30,
                          ha="right", fontsize=7)
        bottom.set_ylabel("work per joule (work unit / J)")
        bottom.legend(fontsize=7)
    bottom.set_title("Throughput per watt by hardware" if len(eff) else "Throughput per watt (no energy in these results)")
    fig.savefig(path, dpi=120)
    plt.close(fig)
