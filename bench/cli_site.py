"""`report --site`: each hardware's case, at its recommended operating point, projected onto a
site (bench/report/site.py does the arithmetic; this parses the price and prints the table).
The reading side: no torch."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.errors import UsageError

__all__ = ["SITE_FORMATS", "site_projection"]

SITE_FORMATS = ("table", "markdown", "csv", "json")


def _price(text: str | None, grid: Any) -> Any:
    """--price AMOUNT[CURRENCY] (per kWh), else the grid preset's price, else None."""
    from bench.report.site import PRICES, Price

    if text is None:
        return PRICES.get(grid.name.lower()) if grid is not None else None
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]{3})?\s*", text)
    if not found or float(found.group(1)) <= 0:
        raise UsageError(f"--price {text!r} is not a price per kWh; valid: AMOUNT[CURRENCY], e.g. 0.12USD or 182.7KRW")
    return Price(float(found.group(1)), (found.group(2) or "").upper() or "per kWh units", "given by the user")


def _per(units: set[str]) -> str:
    """What the per-million columns count: the projections' unit of work where they share one
    ("tokens", "FLOP"), else "units" (a device-count demand over cases of different work)."""
    if len(units) != 1:
        return "units"
    (unit,) = units
    return unit if unit.isupper() else f"{unit}s"


def _cells(projections: list[Any], site: Any) -> tuple[list[str], list[list[str]]]:
    """The projection table's headers and text cells (`~` where an estimate entered), shared by
    the terminal table and markdown."""
    currency = site.price.currency if site.price is not None else ""
    per = _per({p.unit for p in projections})
    headers = ["Hardware", "Case", "At", "Devices", "IT MW", "Facility MW", "MWh/yr", "t CO2/yr"]
    headers += [f"Cost/yr {currency}".strip(), f"{currency}/M {per}".strip(), f"g CO2/M {per}", "Boundary"]
    rows = []
    for p in projections:
        mark = "~" if p.estimate else ""
        rows.append(
            [
                p.hardware,
                p.case,
                p.point,
                f"{p.devices:,}",
                f"{mark}{p.it_mw:,.3f}",
                f"{mark}{p.facility_mw:,.3f}",
                f"{mark}{p.mwh_per_year:,.0f}",
                f"{mark}{p.t_co2_per_year:,.1f}" if p.t_co2_per_year is not None else "-",
                f"{mark}{p.cost_per_year:,.0f}" if p.cost_per_year is not None else "-",
                f"{mark}{p.cost_per_million:,.4g}" if p.cost_per_million is not None else "-",
                f"{mark}{p.g_co2_per_million:,.4g}" if p.g_co2_per_million is not None else "-",
                p.boundary.split(" (")[0] + (" ~" if "default" in p.boundary else ""),
            ]
        )
    return headers, rows


def _machine_readable(projections: list[Any], site: Any, fmt: str) -> str:
    """csv (a row per projection, the site's assumptions on every row) or json ({"site": ...,
    "projections": [...]}) of the projections: figures unrounded, units in the names."""
    import dataclasses
    import json

    import pandas as pd

    assumed = {
        "pue": site.pue,
        "load_factor": site.load_factor,
        "grid": site.grid.name if site.grid is not None else None,
        "grid_g_co2_per_kwh": site.grid.g_per_kwh if site.grid is not None else None,
        "grid_source": site.grid.describe() if site.grid is not None else None,
        "price_per_kwh": site.price.per_kwh if site.price is not None else None,
        "currency": site.price.currency if site.price is not None else None,
        "price_source": site.price.source if site.price is not None else None,
        "node_overhead_given": site.node_overhead,
    }
    found = [{**dataclasses.asdict(p), "notes": list(p.notes)} for p in projections]
    if fmt == "json":
        return json.dumps({"site": assumed, "projections": found}, indent=2) + "\n"
    frame = pd.DataFrame([{**row, "notes": "; ".join(row["notes"]), **assumed} for row in found])
    return str(frame.to_csv(index=False))


def site_projection(args: argparse.Namespace, frame: Any, grid: Any, out: Console) -> int:
    """`report --site`: each hardware's case at its recommended point, projected onto a site."""
    from bench.report.site import DEFAULT_PUE, Site, project, site_lines

    demand = (
        (args.tokens_per_day, "token")
        if args.tokens_per_day
        else (args.flop_per_day, "FLOP")
        if args.flop_per_day
        else (None, None)
    )
    if args.format not in SITE_FORMATS:
        raise UsageError(
            f"--site prints a projection; --format {args.format} is not valid with it (valid: {', '.join(SITE_FORMATS)})"
        )
    if demand[0] is None and args.devices is None:
        raise UsageError("--site needs a demand; valid: --tokens-per-day N, --flop-per-day N or --devices N")
    site = Site(
        units_per_day=demand[0],
        unit=demand[1],
        devices=args.devices,
        pue=args.pue if args.pue is not None else DEFAULT_PUE,
        load_factor=args.load_factor if args.load_factor is not None else 1.0,
        grid=grid,
        price=_price(args.price, grid),
        node_overhead=args.node_overhead,
    )
    projections = project(frame, site)
    if not projections:
        raise UsageError(f"--site: no case here measures {demand[1] or 'work'} with energy; valid: result files of such cases")
    if args.format in ("csv", "json"):
        sys.stdout.write(_machine_readable(projections, site, args.format))  # as it is: no console rendering
        return 0
    headers, rows = _cells(projections, site)
    lines = [*site_lines(site), *dict.fromkeys(n for p in projections for n in p.notes)]
    if args.format == "markdown":
        cells = [[c.replace("|", "\\|") for c in r] for r in [headers, *rows]]
        table_md = [f"| {' | '.join(cells[0])} |", f"|{'---|' * len(headers)}", *(f"| {' | '.join(r)} |" for r in cells[1:])]
        out.print("\n".join([*table_md, "", *(f"- {line}" for line in lines)]), markup=False, highlight=False, soft_wrap=True)
        return 0
    table = Table(title="Site projection (electricity only; ~ an estimate entered)", title_justify="left")
    for column in headers:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    out.print(table)
    for line in lines:
        out.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    return 0
