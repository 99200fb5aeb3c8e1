"""From what the user asked for to a list of Cases: workload x parameters x device.

A `Case` is frozen: the workload name, its fully resolved parameters (defaults filled in for
the device) and the device id. Several values for one key sweep it; several keys sweep the
cartesian product, in the order the workload declares its parameters.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.control.points import OperatingPoint
from bench.errors import UsageError
from bench.measure.hardware import DeviceInfo
from bench.params import ParamSchema, format_exact


@dataclass(frozen=True)
class Case:
    workload: str
    params: tuple[tuple[str, Any], ...]
    device: str
    operating: OperatingPoint | None = None  # the power limit / locked clocks a sweep sets for it

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def id(self) -> str:
        """Stable, readable identity used to match cases across runs: 'matmul(m=8,...)@cpu', with
        the operating point a sweep set after the device: '...@cuda:0[pl=450W]'."""
        suffix = self.operating.suffix if self.operating is not None else ""
        return f"{self.workload}({format_params(self.params, self.workload)})@{self.device}{suffix}"


def format_params(params: Iterable[tuple[str, Any]] | Mapping[str, Any], workload: str | None = None) -> str:
    """'k=v,k=v' with booleans in lower case and byte sizes in units (size=256MiB) where the
    workload is known and declares the parameter as a size."""
    from workloads import registry

    cls = registry().get(workload) if workload else None
    return format_exact(params, cls.schema() if cls else ParamSchema())


def parse_param_args(args: Sequence[str]) -> dict[str, list[str]]:
    """Parse repeated `-p KEY=VALUE[,VALUE...]` into {key: [values]}; UsageError when malformed."""
    parsed: dict[str, list[str]] = {}
    for arg in args:
        key, sep, values = arg.partition("=")
        key = key.strip()
        items = [v.strip() for v in values.split(",")]
        if not sep or not key or not all(items):
            raise UsageError(f"-p {arg!r}: expected KEY=VALUE or KEY=VALUE1,VALUE2,...")
        if key in parsed:
            raise UsageError(f"-p {key} given twice; give several values as {key}=A,B")
        parsed[key] = items
    return parsed


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def expand(workload_name: str, sweep: Mapping[str, Sequence[Any]], devices: Sequence[DeviceInfo]) -> list[Case]:
    """All cases of one workload: the cartesian product of `sweep` on each device.

    Values are parsed and validated by the workload's Params (UsageError on a bad one) and
    device-dependent defaults are filled in; duplicates are dropped, keeping the first.
    """
    from workloads import get

    cls = get(workload_name)
    for key in sweep:
        cls.param(key)  # unknown parameter -> UsageError listing valid ones
    keys = [p.name for p in cls.params if p.name in sweep]
    cases: list[Case] = []
    for device in devices:
        for combo in itertools.product(*(as_list(sweep[k]) for k in keys)):
            resolved = cls.resolve(dict(zip(keys, combo, strict=True)), device)
            case = Case(workload_name, tuple(resolved.items()), device.id)
            if case not in cases:
                cases.append(case)
    return cases
