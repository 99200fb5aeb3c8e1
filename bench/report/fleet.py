"""The fleet's view: every GPU against its siblings, and the ones that stand out named.

Siblings are the GPUs of one hardware model that ran the same case at the same operating point,
with the driver, firmware and torch most of the model's GPUs have: a node whose versions differ
is named as such and its GPUs are left out of the comparison (a driver update is not a faulty
GPU). Each GPU's figures of each case are compared with the siblings' median on five measures:

    throughput         lower is worse     "slower"
    energy per unit    higher is worse    "more J/FLOP"
    average power      higher is worse    "more power"
    mean SM clock      lower is worse     "lower SM clock"
    mean temperature   higher is worse    "hotter"

The rule (`Rule`, defaults stated there and in the README): a figure is an outlier when it is
worse than the median by at least `threshold` (5%) *and* its robust z-score, 0.6745 x (x - median)
/ MAD, is at least `min_z` (3.5, Iglewicz and Hoaglin's cut). Both: the relative deviation keeps a
tight fleet's harmless spread (a MAD of 0.3% makes 2% a z of 4.5) from being named, the z-score
keeps a noisy case's spread (a MAD of 6%) from naming its tails. Where the MAD is 0 (every sibling
the same) the z-score is infinite for any deviation and the relative threshold decides alone.
Cases with fewer than MIN_SIBLINGS GPUs are not judged.

A GPU is named once, by the case where it deviates most, with how many of its cases deviate, its
clock against the median and its throttle reasons. A throttle reason alone makes no outlier:
reasons such as a power cap are routine under load; they explain a deviation when there is one.
A node is named as a node (cooling, power, a PCIe switch) when at least NODE_SHARE of its GPUs
(6 of 8) deviate in the same direction on the same measure; those GPUs are then not listed one by
one. Health signals are findings of their own, from every GPU's latest run whatever its cases did:
a PCIe link below its siblings' generation (a link trains down when idle, so the maximum is no
yardstick for a reading taken at rest) or below its maximum width, uncorrectable ECC errors,
remapped rows pending or failed, Xid events during the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench.store.rows import HEALTH_KEYS

__all__ = ["FLEET_COLUMNS", "MEASURES", "Finding", "FleetReport", "Rule", "analyse"]

MIN_SIBLINGS = 8
NODE_SHARE = 0.75  # 6 of 8
Z_SCALE = 0.6745  # makes the MAD comparable with a standard deviation (normal data)
GROUP = ["device_name", "case_key", "op_label"]
VERSIONS = ["driver", "vbios", "torch"]


@dataclass(frozen=True)
class Measure:
    column: str
    worse: int  # +1: higher is worse; -1: lower is worse
    word: str  # "slower", "more J/FLOP" (the unit filled in), ...


MEASURES = (
    Measure("throughput", -1, "slower"),
    Measure("energy_per_unit", +1, "more J/{unit}"),
    Measure("avg_watts", +1, "more power"),
    Measure("sm_clock_mhz", -1, "lower SM clock"),
    Measure("mean_temperature_c", +1, "hotter"),
)
FLEET_COLUMNS = [
    "run_id",
    "host",
    "slot",
    "uuid",
    "serial",
    "started_at",
    "device_name",
    "driver",
    "vbios",
    "torch",
    "case_key",
    "params",
    "workload",
    "op_label",
    "work_unit",
    "status",
    "throttle_reasons",
    *HEALTH_KEYS,
    "xid_events",
    "energy_source",
    "energy_boundary",
    *[m.column for m in MEASURES],
]


@dataclass(frozen=True)
class Rule:
    """When a figure is an outlier: worse than the siblings' median by at least `threshold`
    (a fraction: 0.05 is 5%) and with a robust z-score of at least `min_z`."""

    threshold: float = 0.05
    min_z: float = 3.5

    def describe(self) -> str:
        return f"worse than the median of its siblings by at least {100 * self.threshold:g}% and a robust z of at least {self.min_z:g}"


@dataclass(frozen=True)
class Finding:
    """One thing the fleet report names: a GPU, a node, a GPU's health, a node's versions."""

    kind: str  # "gpu", "node", "health", "versions"
    host: str
    slot: int | None
    uuid: str | None
    serial: str | None
    sentence: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "host": self.host,
            "slot": self.slot,
            "uuid": self.uuid,
            "serial": self.serial,
            "sentence": self.sentence,
            **self.details,
        }


@dataclass
class FleetReport:
    rule: Rule
    gpus: int
    nodes: int
    cases: int
    findings: list[Finding]
    summary: pd.DataFrame  # per model, case and operating point: GPUs, median, spread, outliers

    @property
    def outliers(self) -> list[Finding]:
        return [f for f in self.findings if f.kind in ("gpu", "node", "health")]


def _latest_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Each GPU's most recent figures of each case (the store keeps every run's: its history).
    A GPU is its UUID, else its host and slot."""
    uuid = frame["uuid"].astype("string")
    missing = uuid.isna()
    if missing.any():
        uuid = uuid.mask(missing, frame["host"].astype("string") + "/" + frame["slot"].astype("string"))
    frame = frame.assign(_gpu=uuid.astype("category"))
    if frame.groupby("_gpu", observed=True)["run_id"].nunique().max() <= 1:
        return frame  # one run per GPU: nothing older to drop
    if "started_at" in frame and frame["started_at"].notna().any():
        frame = frame.sort_values("started_at", kind="stable")
    return frame.drop_duplicates(["_gpu", *GROUP], keep="last")


def _version_findings(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[Finding]]:
    """Leave out the nodes whose driver, firmware or torch differ from their model's usual ones
    (the combination most of its rows have), each named once."""
    keys = ["device_name", *VERSIONS]
    counts = frame.groupby(keys, observed=True, dropna=False).size().reset_index(name="_n")
    usual = counts.sort_values("_n", kind="stable").drop_duplicates("device_name", keep="last")
    differs = np.zeros(len(frame), dtype=bool)
    for _, expected in usual.iterrows():
        wrong = np.zeros(len(frame), dtype=bool)
        for name in VERSIONS:
            column, want = frame[name], expected[name]
            bad = column.notna() if pd.isna(want) else (column != want) | column.isna()
            wrong |= bad.to_numpy(dtype=bool)
        differs |= (frame["device_name"] == expected["device_name"]).to_numpy(dtype=bool) & wrong
    findings = []
    if differs.any():
        models = usual.set_index("device_name")
        for host, rows in frame[differs].groupby(frame.loc[differs, "host"].astype(str), sort=True):
            first = rows.iloc[0]
            want = models.loc[first["device_name"]]
            said = ", ".join(
                f"{name} {_shown(first[name])} (fleet: {_shown(want[name])})"
                for name in VERSIONS
                if _shown(first[name]) != _shown(want[name])
            )
            findings.append(
                Finding("versions", host, None, None, None, f"{host}: {said}; its GPUs are not compared with the others")
            )
    return frame.loc[~differs], findings


def _shown(value: Any) -> str:
    return "?" if value is None or pd.isna(value) else str(value)


def _deviations(frame: pd.DataFrame, rule: Rule) -> pd.DataFrame:
    """Per row and measure: the sibling median, the relative deviation (worse is positive) and
    whether it is an outlier."""
    groups = frame.groupby(GROUP, observed=True, sort=False)
    size = groups["throughput"].transform("size")
    out = {}
    for m in MEASURES:
        values = frame[m.column].astype("float64")
        median = groups[m.column].transform("median")
        mad = (values - median).abs().groupby([frame[c] for c in GROUP], observed=True, sort=False).transform("median")
        worse = m.worse * (values - median)
        relative = worse / median.abs()
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(mad > 0, Z_SCALE * worse / mad, np.where(worse > 0, np.inf, 0.0))
        outlier = (relative >= rule.threshold) & (z >= rule.min_z) & (size >= MIN_SIBLINGS)
        out[f"{m.column}__median"] = median
        out[f"{m.column}__rel"] = relative
        out[f"{m.column}__out"] = outlier.fillna(False)
    out["siblings"] = size
    return pd.DataFrame(out, index=frame.index)


def _unit(row: pd.Series) -> str:
    return str(row.get("work_unit") or "unit")


def _gpu_name(host: str, slot: Any, serial: Any, uuid: Any) -> str:
    who = f"{host} GPU {int(slot)}" if slot is not None and not pd.isna(slot) else host
    ids = ", ".join(
        x for x in (f"serial {serial}" if isinstance(serial, str) else "", uuid if isinstance(uuid, str) else "") if x
    )
    return f"{who} ({ids})" if ids else who


def _sentence(rows: pd.DataFrame, dev: pd.DataFrame, cases_run: int) -> tuple[str, dict[str, Any]]:
    """One GPU's outliers in a sentence: its worst case, the measures it is worse on there,
    how many of its cases deviate, its clock and throttle reasons."""
    out_cols = [f"{m.column}__out" for m in MEASURES]
    flagged = dev.loc[rows.index, out_cols].any(axis=1)
    rels = pd.concat(
        [dev.loc[rows.index, f"{m.column}__rel"].where(dev.loc[rows.index, f"{m.column}__out"]) for m in MEASURES], axis=1
    )
    worst = rels.max(axis=1).idxmax()
    row, d = rows.loc[worst], dev.loc[worst]
    parts = [
        f"{100 * d[f'{m.column}__rel']:.1f}% {m.word.format(unit=_unit(row))}"
        for m in MEASURES[:3]
        if bool(d[f"{m.column}__out"])
    ]
    if not parts:
        parts = [
            f"{100 * d[f'{m.column}__rel']:.1f}% {m.word.format(unit=_unit(row))}"
            for m in MEASURES[3:]
            if bool(d[f"{m.column}__out"])
        ]
    case = f"{row['workload']} {row['params']}" + (f" at {row['op_label']}" if row.get("op_label") else "")
    text = f"{case} {' and '.join(parts)} than the fleet median of {int(d['siblings']):,} GPUs"
    if flagged.sum() > 1 or cases_run > 1:
        text += f" (in {int(flagged.sum())} of {cases_run} cases)"
    clock, clock_median = row.get("sm_clock_mhz"), d.get("sm_clock_mhz__median")
    if _finite(clock) and _finite(clock_median) and abs(clock - clock_median) >= 0.02 * clock_median:
        text += f"; SM clock {clock:,.0f} vs {clock_median:,.0f} MHz"
    reasons = sorted({r for value in rows["throttle_reasons"].dropna() for r in str(value).split(",") if r})
    if reasons:
        text += f"; throttled: {', '.join(reasons)}"
    details = {
        "case": case,
        "cases_deviating": int(flagged.sum()),
        "cases": cases_run,
        **{m.column: float(d[f"{m.column}__rel"]) for m in MEASURES if bool(d[f"{m.column}__out"])},
        "throttle_reasons": reasons,
    }
    return text, details


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _node_findings(frame: pd.DataFrame, dev: pd.DataFrame) -> tuple[list[Finding], set[str]]:
    """Nodes where at least NODE_SHARE of the GPUs deviate the same way on the same measure."""
    findings, covered = [], set()
    per_node_gpus = frame.groupby("host", observed=True)["_gpu"].nunique()
    for m in MEASURES:
        out = dev[f"{m.column}__out"]
        bad = frame.loc[out, ["host", "_gpu"]]
        if bad.empty:
            continue
        counts = bad.groupby("host", observed=True)["_gpu"].nunique()
        for host, n in counts.items():
            total = int(per_node_gpus.get(host, 0))
            if total >= 2 and n >= math.ceil(NODE_SHARE * total) and str(host) not in covered:
                rows = frame[(frame["host"] == host) & out]
                rel = dev.loc[rows.index, f"{m.column}__rel"].median()
                unit = _unit(rows.iloc[0])
                text = (
                    f"{host} as a node: {n} of its {total} GPUs {100 * rel:.1f}% {m.word.format(unit=unit)} than the fleet median "
                    f"(median over its deviating GPUs and cases: cooling, power or a PCIe switch shared by the node?)"
                )
                findings.append(
                    Finding("node", str(host), None, None, None, text, {"measure": m.column, "gpus": int(n), "of": total})
                )
                covered.add(str(host))
    return findings, covered


def _health_findings(frame: pd.DataFrame) -> list[Finding]:
    """A finding per GPU whose health signals (its latest run's) say something is wrong."""

    def number(column: str) -> pd.Series:
        return pd.to_numeric(frame[column], errors="coerce") if column in frame else pd.Series(np.nan, index=frame.index)

    def flag(column: str) -> pd.Series:
        return frame[column].eq(True).fillna(False) if column in frame else pd.Series(False, index=frame.index)

    # The generation against the siblings' (a link trains down when idle, so GPUs read at rest read
    # low together), the width against its maximum (it does not train down to save power).
    usual_gen = number("pcie_gen").groupby(frame["device_name"], observed=True).transform("median")
    link = (number("pcie_gen") < usual_gen) | (number("pcie_width") < number("pcie_width_max"))
    xids = frame["xid_events"].astype("string").fillna("") != "" if "xid_events" in frame else pd.Series(False, index=frame.index)
    suspect = link | (number("ecc_uncorrected") > 0) | flag("remapped_rows_pending") | flag("remapped_rows_failure") | xids
    findings = []
    for _, row in frame[suspect.fillna(False)].drop_duplicates("_gpu", keep="last").iterrows():
        said = []
        gen, gen_max, width, width_max = (row.get(k) for k in ("pcie_gen", "pcie_gen_max", "pcie_width", "pcie_width_max"))
        if bool(link.get(row.name, False)):
            said.append(
                f"PCIe link Gen{_int(gen)} x{_int(width)} (max Gen{_int(gen_max)} x{_int(width_max)}; "
                f"its siblings Gen{_int(usual_gen.get(row.name))})"
            )
        if _known(row.get("ecc_uncorrected")) and row["ecc_uncorrected"] > 0:
            said.append(f"{int(row['ecc_uncorrected'])} uncorrectable ECC error(s)")
        if row.get("remapped_rows_pending") is True:
            said.append("remapped rows pending (needs a GPU reset)")
        if row.get("remapped_rows_failure") is True:
            said.append("a row remapping failed (replace the board)")
        if isinstance(row.get("xid_events"), str) and row["xid_events"]:
            said.append(f"Xid {row['xid_events'].replace(',', ', ')} during the run")
        if said:
            findings.append(_gpu_finding("health", row, "; ".join(said)))
    return findings


def _gpu_finding(kind: str, row: pd.Series, text: str, details: dict[str, Any] | None = None) -> Finding:
    """A finding about one GPU, its sentence led by the GPU's name (host, slot, serial, UUID)."""
    name = _gpu_name(str(row["host"]), row.get("slot"), row.get("serial"), row.get("uuid"))
    return Finding(
        kind, str(row["host"]), _slot(row), _str(row.get("uuid")), _str(row.get("serial")), f"{name}: {text}", details or {}
    )


def _known(value: Any) -> bool:
    return value is not None and not pd.isna(value)


def _int(value: Any) -> str:
    return str(int(value)) if _known(value) else "?"


def _slot(row: pd.Series) -> int | None:
    return int(row["slot"]) if _known(row.get("slot")) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _summary(frame: pd.DataFrame, dev: pd.DataFrame) -> pd.DataFrame:
    out_any = dev[[f"{m.column}__out" for m in MEASURES]].any(axis=1)
    pair, names = _energy_pairs(frame)
    grouped = frame.assign(_out=out_any, _pair=pair).groupby(GROUP, observed=True, sort=True)
    summary = grouped.agg(
        workload=("workload", "first"),
        params=("params", "first"),
        work_unit=("work_unit", "first"),
        gpus=("_gpu", "nunique"),
        throughput=("throughput", "median"),
        p05=("throughput", lambda s: s.quantile(0.05)),
        p95=("throughput", lambda s: s.quantile(0.95)),
        energy_per_unit=("energy_per_unit", "median"),
        avg_watts=("avg_watts", "median"),
        outliers=("_out", "sum"),
        pairs=("_pair", "unique"),
    )
    summary["energy_from"] = [", ".join(sorted({str(names[c]) for c in codes if names.get(c)})) for codes in summary.pop("pairs")]
    return summary.reset_index()


def _energy_pairs(frame: pd.DataFrame) -> tuple[np.ndarray, dict[int, str | None]]:
    """Each row's (energy source, boundary) as one integer, and each integer's name as the
    reports give it, with the boundary where the joules include more than the device
    ("redfish_energy [node]"). Integers from the columns' category codes: a store has a million
    rows, and a group's few distinct pairs are then named once, not row by row."""
    if "energy_source" not in frame or "energy_boundary" not in frame:
        return np.zeros(len(frame), dtype=np.int64), {}
    source, boundary = frame["energy_source"].astype("category"), frame["energy_boundary"].astype("category")
    width = len(boundary.cat.categories) + 1
    pair = source.cat.codes.to_numpy(np.int64) * width + boundary.cat.codes.to_numpy(np.int64) + 1
    names: dict[int, str | None] = {}
    for code in np.unique(pair).tolist():
        s_code, b_code = divmod(code, width)
        src = source.cat.categories[s_code] if s_code >= 0 else None
        bnd = boundary.cat.categories[b_code - 1] if b_code >= 1 else None
        names[code] = None if not isinstance(src, str) else f"{src} [{bnd}]" if isinstance(bnd, str) and bnd != "device" else src
    return pair, names


def analyse(frame: pd.DataFrame, rule: Rule | None = None) -> FleetReport:
    """The fleet report of `frame` (the store's rows, FLEET_COLUMNS at least)."""
    rule = rule or Rule()
    if frame.empty:
        return FleetReport(rule=rule, gpus=0, nodes=0, cases=0, findings=[], summary=pd.DataFrame())
    latest = _latest_runs(frame)  # health from every GPU's latest run, whatever its cases did
    ok = latest[(latest["status"] == "ok") & latest["throughput"].notna()]
    if ok.empty:
        return FleetReport(rule=rule, gpus=0, nodes=0, cases=0, findings=_health_findings(latest), summary=pd.DataFrame())
    compared, findings = _version_findings(ok)
    dev = _deviations(compared, rule)
    nodes, covered = _node_findings(compared, dev)
    findings += nodes
    out_any = dev[[f"{m.column}__out" for m in MEASURES]].any(axis=1)
    cases_per_gpu = compared.groupby("_gpu", observed=True)["case_key"].transform("size")
    for _, rows in compared[out_any & ~compared["host"].astype(str).isin(covered)].groupby("_gpu", observed=True, sort=True):
        text, details = _sentence(rows, dev, int(cases_per_gpu.loc[rows.index[0]]))
        findings.append(_gpu_finding("gpu", rows.iloc[0], text, details))
    findings += _health_findings(latest)
    order = {"versions": 0, "node": 1, "gpu": 2, "health": 3}
    findings.sort(key=lambda f: (order[f.kind], f.host, f.slot if f.slot is not None else -1))
    return FleetReport(
        rule=rule,
        gpus=int(ok["_gpu"].nunique()),
        nodes=int(ok["host"].nunique()),
        cases=int(ok.groupby(GROUP, observed=True).ngroups),
        findings=findings,
        summary=_summary(compared, dev) if len(compared) else pd.DataFrame(),
    )
