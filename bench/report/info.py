"""`wattbench info` as tables: the host, the devices this torch can use, the GPUs the vendor
library sees (with the problem and fix for each one torch cannot use), their power-limit and
clock ranges, and the power source of each device. The facts are gathered on the measuring side
(`bench.measure.machine.gather`); this module only formats them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from rich.console import Console
from rich.table import Table

from bench.units import format_bytes


class MachineInfo(Protocol):
    """What the tables read of `bench.measure.machine.MachineInfo` (named here, not imported:
    the reading side never imports the measuring side)."""

    @property
    def host(self) -> Any: ...

    @property
    def devices(self) -> Sequence[Any]: ...

    @property
    def gpus(self) -> Sequence[Any]: ...

    @property
    def nvml_available(self) -> bool: ...

    @property
    def controls(self) -> Mapping[str, Any]: ...

    @property
    def may_change(self) -> tuple[bool, str]: ...

    @property
    def power(self) -> Any: ...

    @property
    def hint(self) -> str | None: ...

    @property
    def accelerators(self) -> Sequence[tuple[str, Any]]: ...

    @property
    def vendor_errors(self) -> Sequence[tuple[str, str]]: ...

    @property
    def setup_problems(self) -> Sequence[Any]: ...

    def torch_devices_of(self, gpu: Any) -> str | None: ...


def _say(out: Console, text: str) -> None:
    out.print(text, markup=False, highlight=False, soft_wrap=True)


def _watts(w: float | None) -> str:
    return "-" if w is None else f"{w:g} W"


def host_table(info: MachineInfo) -> Table:
    table = Table(title="Host", title_justify="left", show_header=False)
    table.add_column("key")
    table.add_column("value", overflow="fold")
    for key, value in info.host.to_dict().items():
        if key == "memory_bytes" and value:
            value = format_bytes(value)
        table.add_row(key, "-" if value is None else str(value))
    return table


def device_table(info: MachineInfo) -> Table:
    table = Table(title="Devices (this torch)", title_justify="left")
    for column in ("Id", "Name", "Memory", "Cache", "Cores/SMs", "CC", "Power limit", "UUID"):
        table.add_column(column, overflow="fold")
    for d in info.devices:
        table.add_row(
            d.id,
            d.name,
            format_bytes(d.memory_bytes) if d.memory_bytes else "-",
            format_bytes(d.cache_bytes) if d.cache_bytes else "-",
            str(d.multiprocessors or d.cores or "-"),
            d.compute_capability or "-",
            f"{d.power_limit_w:.0f} W" if d.power_limit_w else "-",
            d.uuid or "-",
        )
    return table


def render_gpus(info: MachineInfo, out: Console) -> None:
    """The GPUs table, then each problem and its fix once per distinct pair (a CPU build of
    torch is the same story for every GPU), soft-wrapped so a command or URL is never cut."""
    table = Table(title="GPUs (NVML)" if info.nvml_available else "GPUs (torch; NVML unavailable)", title_justify="left")
    for column in ("#", "Name", "Memory", "Power limit", "UUID", "Usable by torch"):
        table.add_column(column, overflow="fold")
    for g in info.gpus:
        table.add_row(
            "-" if g.nvml_index is None else str(g.nvml_index),
            g.name,
            format_bytes(g.memory_bytes) if g.memory_bytes else "-",
            f"{g.power_limit_w:.0f} W" if g.power_limit_w else "-",
            g.uuid or "-",
            f"yes ({g.torch_device})" if g.usable else "no",
        )
    out.print(table)
    notes: dict[tuple[str, str], list[str]] = {}
    for g in info.gpus:
        if g.problem:
            name = str(g.nvml_index) if g.nvml_index is not None else str(g.torch_device)
            notes.setdefault((g.problem, g.fix or "-"), []).append(name)
    for (problem, fix), names in notes.items():
        _say(out, f"GPU {', '.join(names)}: {problem}")
        _say(out, f"  fix: {fix}")


def render_controls(info: MachineInfo, out: Console) -> None:
    """Power limits and lockable SM clocks per GPU, and whether this process may change them."""
    table = Table(title="Power limits and SM clocks (NVML)", title_justify="left")
    for column in ("#", "Power limit", "Enforced", "Default", "Min-max", "SM clocks (lockable)"):
        table.add_column(column, overflow="fold")
    for g in info.gpus:
        c = info.controls.get(g.uuid or "")
        if c is None:
            continue
        if isinstance(c, str):
            table.add_row(str(g.nvml_index), "-", "-", "-", "-", "-")
            continue
        lim = c.limits
        span = "-" if lim.min_w is None or lim.max_w is None else f"{lim.min_w:g}-{lim.max_w:g} W"
        table.add_row(
            str(g.nvml_index), _watts(lim.current_w), _watts(lim.enforced_w), _watts(lim.default_w), span, c.clock_range_text()
        )
    out.print(table)
    for g in info.gpus:
        why = info.controls.get(g.uuid or "")
        if isinstance(why, str):
            _say(out, f"GPU {g.nvml_index}: {why}")
    allowed, reason = info.may_change
    _say(out, f"this process may change power limits and clocks: {'yes' if allowed else 'no'} ({reason})")


def sources_table(info: MachineInfo) -> Table:
    table = Table(title="Power and energy sources", title_justify="left")
    for column in ("Device", "Energy / power", "Counter update", "Power update"):
        table.add_column(column, overflow="fold")
    described = {s.device_id: s for s in info.power.sources}
    for d in info.devices:
        src = described.get(d.id)
        table.add_row(
            d.id,
            info.power.status[d.id],
            f"{1e3 * src.counter_update_s:.1f} ms" if src and src.counter_update_s else "-",
            f"{1e3 * src.power_update_s:.1f} ms" if src and src.power_update_s else "-",
        )
    return table


def render_accelerators(info: MachineInfo, out: Console) -> None:
    """The GPUs and accelerators of vendors other than NVIDIA (built in or added by a plugin),
    then each vendor whose inventory could not be read, with why, then an AMD machine's set-up
    problems with their fixes."""
    if info.accelerators:
        table = Table(title="Accelerators (other vendors)", title_justify="left")
        for column in ("Vendor", "#", "Name", "Memory", "Power cap", "Cap range", "PCI bus", "UUID", "Torch device"):
            table.add_column(column, overflow="fold")
        for vendor, gpu in info.accelerators:
            low, high = gpu.power_limit_min_w, gpu.power_limit_max_w
            table.add_row(
                vendor,
                str(gpu.index),
                gpu.name,
                format_bytes(gpu.memory_bytes) if gpu.memory_bytes else "-",
                _watts(gpu.power_limit_w),
                f"{low:g}-{high:g} W" if low is not None and high is not None else "-",
                gpu.pci_bus_id or "-",
                gpu.uuid + (" (partitioned)" if gpu.mig_mode else ""),
                info.torch_devices_of(gpu) or "-",
            )
        out.print(table)
    for vendor, why in info.vendor_errors:
        _say(out, f"{vendor}: {why}")
    for p in info.setup_problems:
        _say(out, f"{p.vendor}: {p.problem}")
        _say(out, f"  fix: {p.fix}")


def render_info(info: MachineInfo, out: Console) -> None:
    """Every table of `wattbench info`, in order, and the hint for a device without a source."""
    out.print(host_table(info))
    out.print(device_table(info))
    if info.gpus:
        render_gpus(info, out)
    if info.controls:
        render_controls(info, out)
    render_accelerators(info, out)
    out.print(sources_table(info))
    if info.hint:
        _say(out, f"hint: {info.hint}")
