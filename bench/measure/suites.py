"""Suites: named lists of cases in TOML, built in (workloads/*.toml) or written by a user.

description = "what the suite is for"
[settings]                 # optional; command-line flags win
min_time = 0.5             # seconds the timed window lasts at least
repeats = 5                # timed repeats at least
repeat_time = 0.05         # seconds one repeat lasts at least
warmup_max = 1.0           # seconds warm-up may take at most
rounds = 3                 # times each case is measured, in a new random order each round

[[case]]
workload = "matmul"
device = "cpu"             # optional: only on devices of this kind (cpu or cuda)
params = { size = [512, 1024], dtype = "float32" }   # a list sweeps
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.measure.hardware import DeviceInfo
from bench.measure.plan import Case, as_list, expand

SETTING_KEYS = {
    "min_time": "min_time_s",
    "repeats": "repeats",
    "repeat_time": "repeat_time_s",
    "warmup_max": "warmup_max_s",
    "rounds": "rounds",
    "sustain": "sustain_s",  # seconds: a sustained timed window (bench.measure.sustain)
    "burst": "burst_s",
    "tail": "tail_s",
}
WHOLE_SETTINGS = ("repeats", "rounds")
DEVICE_KINDS = ("cpu", "cuda")


@dataclass(frozen=True)
class SuiteEntry:
    workload: str
    params: Mapping[str, list[Any]]
    device_kind: str | None = None


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    description: str
    entries: tuple[SuiteEntry, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)

    def cases(self, devices: Sequence[DeviceInfo], overrides: Mapping[str, list[str]] | None = None) -> list[Case]:
        """Cases of this suite on `devices`; `overrides` (from -p) replace a key in every entry that has it."""
        from workloads import get

        overrides = overrides or {}
        used: set[str] = set()
        cases: list[Case] = []
        for entry in self.entries:
            names = {p.name for p in get(entry.workload).params}
            params = dict(entry.params)
            for key, values in overrides.items():
                if key in names:
                    params[key] = values
                    used.add(key)
            targets = [d for d in devices if entry.device_kind in (None, d.kind)]
            for case in expand(entry.workload, params, targets):
                if case not in cases:
                    cases.append(case)
        unused = set(overrides) - used
        if unused:
            raise UsageError(f"-p {', '.join(sorted(unused))}: no workload in suite {self.name!r} takes that parameter")
        return cases


def load_suite(path: Path, name: str | None = None) -> Suite:
    """Read and check a suite file; UsageError naming the file and the problem."""
    from workloads import get

    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"suite {path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"suite {path}: not valid TOML: {exc}") from None

    def fail(msg: str) -> UsageError:
        return UsageError(f"suite {path}: {msg}")

    settings_raw = data.get("settings", {})
    if not isinstance(settings_raw, dict):
        raise fail("[settings] must be a table")
    settings: dict[str, Any] = {}
    for key, value in settings_raw.items():
        if key not in SETTING_KEYS:
            raise fail(f"unknown setting {key!r}; valid: {', '.join(SETTING_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise fail(f"setting {key} must be a number >= 0, got {value!r}")
        if key in WHOLE_SETTINGS and (not isinstance(value, int) or value < 1):
            raise fail(f"setting {key} must be a whole number >= 1, got {value!r}")
        settings[SETTING_KEYS[key]] = value
    raw_cases = data.get("case")
    if not isinstance(raw_cases, list) or not raw_cases:
        raise fail("needs at least one [[case]] table")
    entries = []
    for i, raw in enumerate(raw_cases, 1):
        if not isinstance(raw, dict) or "workload" not in raw:
            raise fail(f"case {i} needs a workload")
        unknown = set(raw) - {"workload", "params", "device"}
        if unknown:
            raise fail(f"case {i}: unknown key(s) {', '.join(sorted(unknown))}; valid: workload, params, device")
        params = raw.get("params", {})
        if not isinstance(params, dict):
            raise fail(f"case {i}: params must be a table")
        try:
            cls = get(str(raw["workload"]))
            for key, value in params.items():
                for item in as_list(value):
                    cls.param(key).parse(item, cls.name)
        except UsageError as exc:
            raise fail(f"case {i}: {exc}") from None
        kind = raw.get("device")
        if kind is not None and kind not in DEVICE_KINDS:
            raise fail(f"case {i}: device {kind!r} is not valid; valid: {', '.join(DEVICE_KINDS)}")
        entries.append(SuiteEntry(cls.name, {k: as_list(v) for k, v in params.items()}, kind))
    return Suite(
        name=name or path.stem,
        path=path,
        description=str(data.get("description", "")),
        entries=tuple(entries),
        settings=settings,
    )


def find_suite(target: str) -> Suite | None:
    """A built-in suite by name or a suite file by path; None when `target` is neither."""
    from workloads import builtin_suites

    builtins = builtin_suites()
    if target in builtins:
        return load_suite(builtins[target], target)
    if target.endswith(".toml") or Path(target).is_file():
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"suite file {target!r} does not exist")
        return load_suite(path)
    return None
