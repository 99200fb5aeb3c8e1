"""`report --site`: each hardware's case, at its recommended operating point, projected onto a
site (bench/report/site.py does the arithmetic; this parses the price and prints the table).
The reading side: no torch."""

from __future__ import annotations

import argparse
import re
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.errors import UsageError

__all__ = ["site_projection"]


def _price(text: str | None, grid: Any) -> Any:
    """--price AMOUNT[CURRENCY] (per kWh), else the grid preset's price, else None."""
    from bench.report.site import PRICES, Price

    if text is None:
        return PRICES.get(grid.name.lower()) if grid is not None else None
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]{3})?\s*", text)
    if not found or float(found.group(1)) <= 0:
        raise UsageError(f"--price {text!r} is not a price per kWh; valid: AMOUNT[CURRENCY], e.g. 0.12USD or 182.7KRW")
    return Price(float(found.group(1)), (found.group(2) or "").upper() or "per kWh units", "given by the user")


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
    currency = site.price.currency if site.price is not None else ""
    table = Table(title="Site projection (electricity only; ~ an estimate entered)", title_justify="left")
    for column in (
        "Hardware",
        "Case",
        "At",
        "Devices",
        "IT MW",
        "Facility MW",
        "MWh/yr",
        "t CO2/yr",
        f"Cost/yr {currency}",
        f"{currency}/M units",
        "g CO2/M units",
        "Boundary",
    ):
        table.add_column(column, overflow="fold")
    for p in projections:
        mark = "~" if p.estimate else ""
        table.add_row(
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
        )
    out.print(table)
    for line in [*site_lines(site), *dict.fromkeys(n for p in projections for n in p.notes)]:
        out.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    return 0
