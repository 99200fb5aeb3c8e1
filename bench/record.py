"""The result record: what a run file holds, as frozen dataclasses, read and written in one place.

The runner builds a `CaseRecord` per case and writes the run as a `RunRecord`; `bench.merge`
combines the ranks' records of a job; the loader (`bench.report.load`) reads files through
`RunRecord.from_json`, so a damaged or mistyped file is one `RecordError` naming the field, never
a traceback. The rules that combine figures are methods here, written once:

- `Energy.over_rounds`: one window's figures from the windows of several rounds;
- `Energy.over_devices`: a job's figure from its distinct devices' readings;
- `CaseRecord.efficiency_of`: work per joule, the median throughput over the average watts;
  `CaseRecord.energy_per_unit` is its inverse ("where is energy per token computed?": here,
  with the token as the unit of an llm case).

Every energy figure carries its boundary (`Energy.boundary`): what the joules include, declared
by the source that measured them. `device` is a GPU board or a CPU package (NVML, RAPL, and a
nominal wattage, which stands for the device it names); `node` a whole server as its BMC or power
supplies see it; `wall` an external meter. Files written before the boundary was recorded hold
device figures only (`boundary` absent: `DEVICE`). Figures of different boundaries are never
added: `over_devices` refuses it.

The format is kept exactly. A record remembers the keys of the object it was read from in their
order, keeps keys it does not know (`extra`), and tells an absent key from a null one, so a file
read and written again is the same bytes. `params`, `details`, `work_terms`, traces and settings
are free-form JSON. This module imports neither torch nor pandas: both sides use it.

History of the format:
- wattbench.run/1 (issue 1): run, host, devices, cases; later versions added keys without a new
  version number: `work_terms`, `timing`, `details`, `rounds` (issue 6), `operating_point`
  (issue 12), `energy.sm_clock_mhz`, `memory.scope`; files from those versions have 22 to 25
  keys per case and read as they are.
- wattbench.shard/1 (issue 11): one rank's part of a torchrun job: a run/1 document plus `rank`,
  `failure`, and a plan `index` on each case.
- wattbench.run/2 (issue 11): a job's merged file: run/1 plus a `ranks` section, `index` and
  `ranks` on each case, and job-level figures (work summed, the slowest rank's time, the energy
  of each distinct device once).
- `energy.boundary` (issue 18): written from then on; absent means `device`.
- `node_energy` (issue 21): a case's node energy from the BMC beside its device energy, over
  the same windows, with `boundary` "node"; absent where the run read no BMC. The run's
  `node_power` says which BMC, what it read and its update period, and how many GPUs the node
  has (`gpus_on_node`) beside those a case ran on there (`gpus_per_case`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import operator
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TypeAlias, TypeVar

# JSON as the standard library reads it; free-form parts of a record keep this shape.
Json: TypeAlias = None | bool | int | float | str | list["Json"] | dict[str, "Json"]
JsonObject = dict[str, Json]
Number = int | float

DEVICE, NODE, WALL = "device", "node", "wall"
BOUNDARIES = (DEVICE, NODE, WALL)
NOMINAL = "nominal"


class RecordError(ValueError):
    """A field of a result document has the wrong type; the message names the field."""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_NUMERIC = frozenset({int, float})  # exact types: a bool is not a number here


def _is_number(value: object) -> bool:
    return type(value) in _NUMERIC


# --- how a field is read and written ------------------------------------------------------------
# Each field's metadata names its kind: a parser (JSON value -> field value, RecordError on a
# wrong type) and, for kinds kept in another shape (tuples, sections), a writer back to JSON.

Parse = Callable[[object, str], object]


def _number(value: object, where: str) -> object:
    if value is None or _is_number(value):
        return value
    raise RecordError(f"{where} is {_shown(value)}, not a number")


def _text(value: object, where: str) -> object:
    if value is None or isinstance(value, str):
        return value
    raise RecordError(f"{where} is {_shown(value)}, not text")


def _required_text(value: object, where: str) -> object:
    if isinstance(value, str):
        return value
    raise RecordError(f"{where} is {_shown(value)}, not text")


def _flag(value: object, where: str) -> object:
    if value is None or isinstance(value, bool):
        return value
    raise RecordError(f"{where} is {_shown(value)}, not true or false")


def _any(value: object, where: str) -> object:
    return value


def _object(value: object, where: str) -> object:
    if value is None or isinstance(value, dict):
        return value
    raise RecordError(f"{where} is {_shown(value)}, not an object")


def _number_map(value: object, where: str) -> object:
    _object(value, where)
    if isinstance(value, dict):
        for key, item in value.items():
            _number(item, f"{where}.{key}")
    return value


def _numbers(value: object, where: str) -> object:
    if value is None:
        return None
    if type(value) is not list or not _NUMERIC.issuperset(map(type, value)):
        raise RecordError(f"{where} is {_shown(value)}, not a list of numbers")
    return tuple(value)


def _texts(value: object, where: str) -> object:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RecordError(f"{where} is {_shown(value)}, not a list of text")
    return tuple(value)


def _pairs(value: object, where: str) -> object:
    if value is None:
        return None
    if (
        type(value) is not list
        or not all(type(p) is list and len(p) == 2 for p in value)
        or not _NUMERIC.issuperset(map(type, itertools.chain.from_iterable(value)))
    ):
        raise RecordError(f"{where} is {_shown(value)}, not a list of [seconds, watts] pairs")
    return value


def _list_out(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _kind(
    parse: Parse, write: Callable[[object], object] | None = None, *, omit_none: bool = False, column: str | None = None
) -> dict[str, object]:
    return {"parse": parse, "write": write, "omit_none": omit_none, "column": column}


def number(*, omit_none: bool = False, column: str | None = None) -> Number | None:
    """A number or null (an int stays an int: the file is written back as it was read).
    `column`: the loader's column of the same figure (see `case_columns`)."""
    return field(default=None, metadata=_kind(_number, omit_none=omit_none, column=column))


def text(*, omit_none: bool = False, required: bool = False) -> str | None:
    return field(default=None, metadata=_kind(_required_text if required else _text, omit_none=omit_none))


def flag(*, omit_none: bool = False) -> bool | None:
    return field(default=None, metadata=_kind(_flag, omit_none=omit_none))


def free(*, omit_none: bool = False) -> Json:
    """Free-form JSON, kept as read."""
    return field(default=None, metadata=_kind(_any, omit_none=omit_none))


def free_object(*, omit_none: bool = False, numbers: bool = False) -> JsonObject | None:
    """A free-form JSON object (`numbers`: every value a number), kept as read."""
    return field(default=None, metadata=_kind(_number_map if numbers else _object, omit_none=omit_none))


def numbers() -> tuple[Number, ...] | None:
    return field(default=None, metadata=_kind(_numbers, _list_out))


def texts() -> tuple[str, ...] | None:
    return field(default=None, metadata=_kind(_texts, _list_out))


def pairs() -> Json:
    """[[seconds, watts], ...]: a power trace, kept as read."""
    return field(default=None, metadata=_kind(_pairs, omit_none=False))


# Scalar parsers and the exact value types each accepts (None: any JSON value): an object whose
# shape was checked once needs no call per field (`Section.parse`).
_SCALAR: dict[Parse, frozenset[type] | None] = {
    _number: frozenset({int, float, type(None)}),
    _text: frozenset({str, type(None)}),
    _required_text: frozenset({str}),
    _flag: frozenset({bool, type(None)}),
    _any: None,
    _object: frozenset({dict, type(None)}),
}
# How to read an object of given keys: (fields read further, unknown keys, scalar type groups).
_Plan = tuple[
    tuple[tuple[str, Parse], ...],
    tuple[str, ...],
    tuple[tuple[Callable[[Mapping[str, object]], tuple[object, ...]], frozenset[type]], ...],
]
_PLANS: dict[tuple[type, tuple[str, ...]], _Plan] = {}
MAX_PLANS = 4096  # key layouts remembered; more (a file of ever-new keys) are planned each time

S = TypeVar("S", bound="Section")


def _section_parse(cls: type[Section]) -> Parse:
    def parse(value: object, where: str) -> object:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise RecordError(f"{where} is {_shown(value)}, not an object")
        return cls.parse(value, where + ".")

    return parse


def _sections_parse(cls: type[Section]) -> Parse:
    def parse(value: object, where: str) -> object:
        if value is None:
            return None
        if not isinstance(value, list):
            raise RecordError(f"{where} is {_shown(value)}, not a list of objects")
        parsed = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise RecordError(f"{where}[{i}] is {_shown(item)}, not an object")
            parsed.append(cls.parse(item, f"{where}[{i}]."))
        return tuple(parsed)

    return parse


def _section_out(value: object) -> object:
    return value.to_json() if isinstance(value, Section) else value


def _sections_out(value: object) -> object:
    return [v.to_json() if isinstance(v, Section) else v for v in value] if isinstance(value, tuple) else value


def section(cls: type[S], *, omit_none: bool = False) -> S | None:
    """A nested object read as `cls`."""
    return field(default=None, metadata=_kind(_section_parse(cls), _section_out, omit_none=omit_none))


def sections(cls: type[S], *, omit_none: bool = False) -> tuple[S, ...] | None:
    """A list of objects, each read as `cls`."""
    return field(default=None, metadata=_kind(_sections_parse(cls), _sections_out, omit_none=omit_none))


@dataclass(frozen=True)
class _Spec:
    name: str
    parse: Parse
    write: Callable[[object], object] | None
    omit_none: bool
    column: str | None


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Section:
    """A JSON object with known fields. `layout` is the keys of the object it was read from, in
    their order (None for one built here: its fields in declaration order, then `extra`);
    `extra` holds the keys this version does not know, written back where they were."""

    layout: tuple[str, ...] | None = field(default=None, repr=False, compare=False)
    extra: JsonObject = field(default_factory=dict, repr=False, compare=False)

    RESERVED: ClassVar[frozenset[str]] = frozenset({"layout", "extra"})
    CHECKS: ClassVar[bool] = False  # True where `check` says more than the fields' types

    @classmethod
    @functools.cache
    def specs(cls) -> dict[str, _Spec]:
        """The class's JSON fields by key (cached: computed once per class)."""
        found = {}
        for f in dataclasses.fields(cls):
            if f.name in Section.RESERVED:
                continue
            meta = f.metadata
            found[f.name] = _Spec(f.name, meta["parse"], meta["write"], bool(meta["omit_none"]), meta["column"])
        return found

    @classmethod
    def parse(cls: type[S], doc: Mapping[str, object], where: str = "") -> S:
        """The record of a JSON object; RecordError naming the first field of a wrong type
        (`where` prefixes its name: "energy.").

        A report reads 10,000 cases, and their sections share a few layouts of keys. So how to
        read an object is planned once per layout: its scalar fields (numbers, text, flags,
        free-form objects) are checked by type, a group of them in one pass, and only the
        fields that hold more (sections, lists, traces) are read further, one by one."""
        layout = tuple(doc)
        plan = _PLANS.get((cls, layout))
        if plan is None:
            plan = cls._plan(layout)
            if len(_PLANS) < MAX_PLANS:
                _PLANS[(cls, layout)] = plan
        deep, extra_keys, groups = plan
        for values_of, allowed in groups:
            if not allowed.issuperset(map(type, values_of(doc))):
                cls._wrong_scalar(doc, where)  # raises, naming the field
        record = object.__new__(cls)  # not __init__: a frozen dataclass's sets each field slowly
        state = record.__dict__
        state.update(cls._defaults())
        state.update(doc)
        extra: JsonObject = {k: state.pop(k) for k in extra_keys} if extra_keys else {}
        for key, parse in deep:
            state[key] = parse(state[key], where + key)
        if cls.CHECKS:
            cls.check(doc, where)
        state["layout"], state["extra"] = layout, extra
        return record

    @classmethod
    def _plan(cls, layout: tuple[str, ...]) -> _Plan:
        """How to read objects with the keys `layout`: the fields to read further (with their
        parser), the keys this version does not know, and the scalar fields grouped by the
        value types they accept (each group's types checked in one pass)."""
        parsers = {k: spec.parse for k, spec in cls.specs().items()}
        deep: list[tuple[str, Parse]] = []
        extra: list[str] = []
        by_types: dict[frozenset[type], list[str]] = {}
        for key in layout:
            parse = parsers.get(key)
            if parse is None:
                extra.append(key)
            elif parse in _SCALAR:
                allowed = _SCALAR[parse]
                if allowed is not None:
                    by_types.setdefault(allowed, []).append(key)
            else:
                deep.append((key, parse))
        groups = tuple((operator.itemgetter(*keys, keys[0]), allowed) for allowed, keys in by_types.items())
        return tuple(deep), tuple(extra), groups

    @classmethod
    def _wrong_scalar(cls, doc: Mapping[str, object], where: str) -> None:
        """Raise the RecordError of the first scalar field of `doc` with a wrong type."""
        specs = cls.specs()
        for key, value in doc.items():
            spec = specs.get(key)
            if spec is not None and spec.parse in _SCALAR:
                spec.parse(value, where + key)

    @classmethod
    @functools.cache
    def _defaults(cls) -> dict[str, object]:
        return {k: None for k in cls.specs()}

    @classmethod
    def build(cls: type[S], values: Mapping[str, object], layout: tuple[str, ...], extra: JsonObject) -> S:
        """The record of already-parsed field values, made without the dataclass's __init__:
        a frozen dataclass sets each field through object.__setattr__, which costs more than
        the parsing itself at 10,000 cases."""
        record = object.__new__(cls)
        state = record.__dict__
        state.update(cls._defaults())
        state.update(values)
        state["layout"], state["extra"] = layout, extra
        return record

    @classmethod
    def check(cls, doc: Mapping[str, object], where: str) -> None:
        """What a class requires of the object `doc` beyond its fields' types (a subclass that
        says more sets CHECKS)."""

    def to_json(self) -> JsonObject:
        """The JSON object of this record: the keys read, in their order, with their values now;
        for a record built here, its fields in order (a field marked omit_none left out while
        None), then its extra keys. A field set that the source lacked comes last."""
        specs = self.specs()
        out: JsonObject = {}
        keys: Iterable[str]
        if self.layout is None:
            keys = [k for k, s in specs.items() if not (s.omit_none and getattr(self, k) is None)] + list(self.extra)
        else:
            keys = self.layout
        for key in keys:
            spec = specs.get(key)
            if spec is None or key in Section.RESERVED:
                if key in self.extra:
                    out[key] = self.extra[key]
                continue
            value = getattr(self, key)
            out[key] = spec.write(value) if spec.write is not None else value  # type: ignore[assignment]
        if self.layout is not None:
            for key, spec in specs.items():
                value = getattr(self, key)
                if key not in out and value is not None:
                    out[key] = spec.write(value) if spec.write is not None else value  # type: ignore[assignment]
        return out

    def __repr__(self) -> str:
        # One generic repr (the dataclasses are made with repr=False and eq=False: fourteen
        # generated __repr__ and __eq__ methods cost the reading side's start-up time).
        return f"{type(self).__name__}({self.to_json()!r})"

    def has(self, key: str) -> bool:
        """Whether the object holds `key` (null or not): read records say what the file had."""
        if self.layout is None:  # built here: the keys `to_json` writes
            spec = self.specs().get(key)
            return key in self.extra or (spec is not None and not (spec.omit_none and getattr(self, key) is None))
        return key in self.layout

    def with_keys(self: S, *keys: str) -> S:
        """This record with `keys` present (null where None), after the keys it has."""
        layout = self.layout if self.layout is not None else tuple(self.to_json())
        return self.but(layout=layout + tuple(k for k in keys if k not in layout))

    def without(self: S, *keys: str) -> S:
        """This record without `keys` (fields set to None, extra keys dropped)."""
        specs = self.specs()
        layout = self.layout if self.layout is not None else tuple(self.to_json())
        changes = {k: None for k in keys if k in specs}
        extra = {k: v for k, v in self.extra.items() if k not in keys}
        return self.but(layout=tuple(k for k in layout if k not in keys), extra=extra, **changes)

    def but(self: S, **changes: object) -> S:
        """A copy with `changes` (dataclasses.replace keeping layout and extra)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


# --- the sections -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Summary(Section):
    """A summary of samples (seconds per iteration, or throughput in work units per second):
    median, quartiles and spread; `cv` = stdev / mean (0 for one sample)."""

    n: Number | None = number()
    median: Number | None = number()
    mean: Number | None = number()
    stdev: Number | None = number()
    min: Number | None = number()
    max: Number | None = number()
    q1: Number | None = number()
    q3: Number | None = number()
    cv: Number | None = number()
    iqr: Number | None = number()

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        """The summary of `samples` (ValueError when there are none)."""
        if not samples:
            raise ValueError("no samples")
        values = [float(x) for x in samples]
        mean = statistics.fmean(values)
        stdev = statistics.stdev(values) if len(values) > 1 else 0.0
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else (values[0],) * 3
        return cls(
            n=len(values),
            median=statistics.median(values),
            mean=mean,
            stdev=stdev,
            min=min(values),
            max=max(values),
            q1=q1,
            q3=q3,
            cv=stdev / mean if mean else 0.0,
            iqr=q3 - q1,
        )


def total(values: Iterable[object]) -> float | None:
    """The sum of figures, None when any is missing (a total over some would mislead)."""
    listed = [float(v) if _is_number(v) else None for v in values]  # type: ignore[arg-type]
    return None if not listed or any(v is None for v in listed) else float(sum(v for v in listed if v is not None))


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Energy(Section):
    """The energy of a case's timed windows on one device (or a job's devices): joules over
    `duration_s` seconds, `avg_watts` = joules / seconds, from `source` (a counter or a power
    integral), inside `boundary`. `idle_watts` is the device's draw with nothing running and
    `dynamic_joules` the joules above it."""

    joules: Number | None = number(column="energy_j")
    avg_watts: Number | None = number(column="avg_watts")
    peak_watts: Number | None = number(column="peak_watts")
    source: str | None = text()
    estimate: bool | None = flag()
    boundary: str | None = text(omit_none=True)
    samples: Number | None = number()
    duration_s: Number | None = number()
    counter_joules: Number | None = number()
    integral_joules: Number | None = number()
    mismatch: Number | None = number()
    sm_clock_mhz: Number | None = number()
    mean_temperature_c: Number | None = number(omit_none=True, column="mean_temperature_c")
    max_temperature_c: Number | None = number(omit_none=True, column="max_temperature_c")
    trace: Json = pairs()
    idle_watts: Number | None = number(omit_none=True, column="idle_watts")
    dynamic_joules: Number | None = number(omit_none=True, column="dynamic_energy_j")
    devices: Number | None = number(omit_none=True)
    scope: str | None = text(omit_none=True)

    @property
    def energy_boundary(self) -> str:
        """What the joules include: `device` for files written before it was recorded."""
        return self.boundary or DEVICE

    @property
    def is_estimate(self) -> bool:
        return self.source == NOMINAL or bool(self.estimate)

    def trace_points(self) -> tuple[list[float], list[float]]:
        """(seconds since the window start, watts) of the trace's [t, w] pairs."""
        if not isinstance(self.trace, list):
            return [], []
        return [float(p[0]) for p in self.trace], [float(p[1]) for p in self.trace]  # type: ignore[index,arg-type]

    @classmethod
    def over_rounds(cls, parts: Sequence[Energy]) -> Energy:
        """One figure from the windows of several rounds on one device: joules and seconds add
        up, average watts = joules / seconds (a power-only round: the rounds' averages weighted
        by length), the mean SM clock is weighted by the windows' lengths, the peak is the
        largest, the traces follow each other in time."""
        if len(parts) == 1:
            return parts[0]
        duration = float(sum(p.duration_s or 0.0 for p in parts))
        joules = total(p.joules for p in parts)
        avg: float | None
        if joules is not None and duration > 0:
            avg = joules / duration
        else:
            known = [(float(p.avg_watts), float(p.duration_s or 0.0)) for p in parts if p.avg_watts is not None]
            weight = sum(d for _, d in known)
            avg = sum(w * d for w, d in known) / weight if known and weight > 0 else None
        clocks = [(float(p.sm_clock_mhz), float(p.duration_s or 0.0)) for p in parts if p.sm_clock_mhz is not None]
        clock_s = sum(d for _, d in clocks)
        temperatures = [
            (float(p.mean_temperature_c), float(p.duration_s or 0.0)) for p in parts if p.mean_temperature_c is not None
        ]
        temperature_s = sum(d for _, d in temperatures)
        hottest = [p.max_temperature_c for p in parts if p.max_temperature_c is not None]
        peaks = [p.peak_watts for p in parts if p.peak_watts is not None]
        mismatches = [p.mismatch for p in parts if p.mismatch is not None]
        trace: list[Json] = []
        offset = 0.0
        for p in parts:
            times, watts = p.trace_points()
            trace.extend([round(t + offset, 4), w] for t, w in zip(times, watts, strict=True))
            offset += float(p.duration_s or 0.0)
        return cls(
            joules=joules,
            avg_watts=avg,
            peak_watts=max(peaks) if peaks else None,
            source=parts[0].source,
            estimate=parts[0].estimate,
            boundary=parts[0].boundary,
            samples=int(sum(p.samples or 0 for p in parts)),
            duration_s=duration,
            counter_joules=total(p.counter_joules for p in parts),
            integral_joules=total(p.integral_joules for p in parts),
            mismatch=max(mismatches) if mismatches else None,
            sm_clock_mhz=sum(c * d for c, d in clocks) / clock_s if clocks and clock_s > 0 else None,
            mean_temperature_c=sum(c * d for c, d in temperatures) / temperature_s
            if temperatures and temperature_s > 0
            else None,
            max_temperature_c=max(hottest) if hottest else None,
            trace=trace,
        )

    def above_idle(self, idle_watts: float | None) -> Energy:
        """This figure with the device's idle draw and the joules above it (None where unknown)."""
        dynamic = (
            self.joules - idle_watts * float(self.duration_s or 0.0)
            if idle_watts is not None and self.joules is not None
            else None
        )
        return self.but(idle_watts=idle_watts, dynamic_joules=dynamic).with_keys("idle_watts", "dynamic_joules")

    @classmethod
    def over_devices(cls, parts: Sequence[Energy], traces: Callable[[Sequence[Json]], Json]) -> Energy:
        """A job's figure from one reading per distinct device (measured over the same windows):
        joules, average and peak watts summed (the peak sum is an upper bound: the peaks need
        not coincide); one source when all agree, "nominal" as soon as any part is an estimate,
        else the sources joined; the hottest device's temperatures; the first reading's other
        keys kept. `traces` sums the devices'
        traces into one. RecordError when the parts have different boundaries: a GPU's joules
        and a node's do not add."""
        boundaries = {p.energy_boundary for p in parts}
        if len(boundaries) > 1:
            raise RecordError(f"energy of different boundaries ({', '.join(sorted(boundaries))}) cannot be added")
        sources = list(dict.fromkeys(str(p.source) for p in parts))
        durations = [p.duration_s for p in parts if p.duration_s is not None]
        mismatches = [p.mismatch for p in parts if p.mismatch is not None]
        hottest = max(parts, key=lambda p: p.max_temperature_c if p.max_temperature_c is not None else float("-inf"))
        first = parts[0]
        return first.but(
            joules=total(p.joules for p in parts),
            avg_watts=total(p.avg_watts for p in parts),
            peak_watts=total(p.peak_watts for p in parts),
            source=NOMINAL if NOMINAL in sources else sources[0] if len(sources) == 1 else "+".join(sources),
            estimate=any(p.is_estimate for p in parts),
            samples=int(total(p.samples for p in parts) or 0),
            duration_s=max(durations) if durations else None,
            devices=len(parts),
            scope="job: energy of each distinct device, summed",
            counter_joules=total(p.counter_joules for p in parts),
            integral_joules=total(p.integral_joules for p in parts),
            dynamic_joules=total(p.dynamic_joules for p in parts),
            idle_watts=total(p.idle_watts for p in parts),
            mismatch=max(mismatches) if mismatches else None,
            trace=traces([p.trace for p in parts]),
            mean_temperature_c=hottest.mean_temperature_c,
            max_temperature_c=hottest.max_temperature_c,
        ).with_keys("devices", "scope", "counter_joules", "integral_joules", "dynamic_joules", "idle_watts", "mismatch")


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Memory(Section):
    """Peak memory of the case over `scope` (its timed window), in bytes, and how it was read."""

    peak_bytes: Number | None = number(column="peak_memory_bytes")
    source: str | None = text()
    scope: str | None = text(omit_none=True)


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Verify(Section):
    """The output check: the largest relative error against the reference, and the tolerance."""

    max_rel_error: Number | None = number(column="max_rel_error")
    tolerance: Number | None = number()
    passed: bool | None = flag()


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Timing(Section):
    """How the case was timed: warm-up seconds and windows, the timed window's length in
    seconds, and the host's enqueue time per iteration (GPU) against the device's."""

    warmup_s: Number | None = number()
    warmup_windows: Number | None = number()
    warmup_converged: bool | None = flag()
    window_s: Number | None = number()
    enqueue_s_per_iter: Number | None = number()
    enqueue_ratio: Number | None = number()


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Round(Section):
    """One round of a case: when it started, its repeats, median seconds per iteration and
    average watts, its warm-up."""

    started_at: str | None = text()
    repeats: Number | None = number()
    seconds_per_iter_median: Number | None = number()
    avg_watts: Number | None = number()
    warmup_s: Number | None = number()
    warmup_windows: Number | None = number()
    warmup_converged: bool | None = flag()
    worker_start_s: Number | None = number(omit_none=True)
    round: Number | None = number()


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class OperatingState(Section):
    """The power limit and clocks a sweep set for the case, what the driver enforced, and the
    mean SM clock and average watts observed over the timed window."""

    power_limit_w: Number | None = number()
    enforced_power_limit_w: Number | None = number()
    gpu_clocks_mhz: Number | None = number()
    settle_s: Number | None = number()
    sm_clock_mhz: Number | None = number()
    avg_watts: Number | None = number()
    power_limit_request: str | None = text(omit_none=True)


CASE_STATUSES = ("ok", "failed", "oom", "skipped", "interrupted")


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class CaseRecord(Section):
    """One case of a run (the file's `cases[]` entry): what ran, how it ended, and its figures.
    Throughput is in `work_unit` per second; `efficiency` in work units per joule."""

    id: str | None = text(required=True)
    workload: str | None = text(required=True)
    params: JsonObject | None = free_object()
    device: str | None = text(required=True)
    status: str | None = text(required=True)
    error: str | None = text()
    work_unit: str | None = text()
    work_per_iter: Number | None = number()
    work_terms: JsonObject | None = free_object(numbers=True)
    iterations: Number | None = number()
    repeats: Number | None = number()
    seconds_per_iter: Summary | None = section(Summary)
    raw_seconds: tuple[Number, ...] | None = numbers()
    throughput: Summary | None = section(Summary)
    energy: Energy | None = section(Energy)
    efficiency: Number | None = number(column="efficiency")
    memory: Memory | None = section(Memory)
    verify: Verify | None = section(Verify)
    timing: Timing | None = section(Timing)
    flags: tuple[str, ...] | None = texts()
    details: JsonObject | None = free_object()
    duration_s: Number | None = number()
    operating_point: OperatingState | None = section(OperatingState, omit_none=True)
    rounds: tuple[Round, ...] | None = sections(Round, omit_none=True)
    index: Number | None = number(omit_none=True)
    ranks: Number | None = number(omit_none=True)
    # a sustained case's segments, burst and tail windows (bench.measure.sustain)
    sustained: JsonObject | None = free_object(omit_none=True)
    # the whole node over the same timed windows, from its BMC (boundary "node", issue 21); a
    # job's is each node's once, summed
    node_energy: Energy | None = section(Energy, omit_none=True)

    CHECKS: ClassVar[bool] = True

    @classmethod
    def check(cls, doc: Mapping[str, object], where: str) -> None:
        for key in ("id", "workload", "params", "device", "status"):
            if key not in doc:
                raise RecordError(f"{where.rstrip('.')} lacks {key}".lstrip())
        if doc["status"] not in CASE_STATUSES:
            raise RecordError(f"{where}status is {_shown(doc['status'])}: a case's status is one of {', '.join(CASE_STATUSES)}")

    @staticmethod
    def efficiency_of(throughput: Summary | None, energy: Energy | None) -> float | None:
        """Work units per joule: the median throughput (units/s) over the average watts (J/s)."""
        if throughput is None or throughput.median is None or energy is None or not energy.avg_watts:
            return None
        return float(throughput.median) / float(energy.avg_watts)

    @property
    def energy_per_unit(self) -> float | None:
        """Joules per unit of work (J/token, J/FLOP): the inverse of `efficiency`."""
        return 1.0 / self.efficiency if self.efficiency else None

    @classmethod
    def started(
        cls, id: str, workload: str, params: JsonObject, device: str, status: str, error: str | None = None
    ) -> CaseRecord:
        """A case that has no figures yet (skipped, failed before timing, interrupted)."""
        return cls(
            id=id,
            workload=workload,
            params=params,
            device=device,
            status=status,
            error=error,
            raw_seconds=(),
            flags=(),
            details={},
        )


def case_columns() -> dict[str, tuple[str, str]]:
    """The loader's columns that come straight from a field of the case record, by column name:
    (section, field); a field with `column=` metadata is a column of every report and export
    without an edit elsewhere."""
    found: dict[str, tuple[str, str]] = {}
    for key, spec in CaseRecord.specs().items():
        if spec.column:
            found[spec.column] = ("", key)
    for section_key, cls in (("energy", Energy), ("memory", Memory), ("verify", Verify)):
        for key, spec in cls.specs().items():
            if spec.column:
                found[spec.column] = (section_key, key)
    return found


# --- the run --------------------------------------------------------------------------------------

SCHEMA = "wattbench.run/1"  # what a single-process run writes
SCHEMA_V2 = "wattbench.run/2"  # a multi-rank job's merged run file (bench.merge)
RUN_SCHEMAS = (SCHEMA, SCHEMA_V2)
SHARD_SCHEMA = "wattbench.shard/1"  # one rank's part of a multi-rank run: not a run
SHARD_IS_NOT_A_RUN = "a rank's shard of a multi-rank run, not a run: `wattbench merge DIR` builds the run file"
# "running" while a run writes (or after it crashed), "aborted" when a CUDA error left the
# process unable to run more cases (run.abort_reason says which and why).
RUN_STATUSES = ("running", "complete", "interrupted", "aborted")
REQUIRED = {
    "run": ("id", "started_at", "wattbench_version", "command", "status"),
    "host": ("hostname", "os", "python", "torch"),
}
REQUIRED_CASE = ("id", "workload", "params", "device", "status")


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class RunInfo(Section):
    """The run: its id, when it started and finished (ISO 8601 UTC), the command, its status,
    the timing settings, the monitor's sources, the idle power measured before the cases and the
    node's BMC where one was read."""

    id: str | None = text()
    started_at: str | None = text()
    finished_at: str | None = text()
    wattbench_version: str | None = text()
    command: str | None = text()
    status: str | None = text()
    settings: JsonObject | None = free_object(omit_none=True)
    cases_planned: Number | None = number(omit_none=True)
    monitor: Json = free(omit_none=True)
    idle_power: Json = free(omit_none=True)
    node_power: Json = free(omit_none=True)
    abort_reason: str | None = text(omit_none=True)
    failed_rank: Json = free(omit_none=True)


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class HostRecord(Section):
    """The machine that ran: names and versions."""

    hostname: str | None = text()
    os: str | None = text()
    python: str | None = text()
    torch: str | None = text()
    cuda: str | None = text()
    driver: str | None = text()
    cpu_model: str | None = text()
    cpu_count: Number | None = number()
    memory_bytes: Number | None = number()
    torch_threads: Number | None = number()
    nvml: str | None = text()


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class DeviceRecord(Section):
    """A device a case ran on (a job's merged file: the job's devices, `ranks` and `nodes`)."""

    id: str | None = text()
    kind: str | None = text()
    name: str | None = text()
    memory_bytes: Number | None = number()
    cache_bytes: Number | None = number(omit_none=True)
    cores: Number | None = number(omit_none=True)
    multiprocessors: Number | None = number(omit_none=True)
    compute_capability: str | None = text(omit_none=True)
    uuid: str | None = text(omit_none=True)
    pci_bus_id: str | None = text(omit_none=True)
    power_limit_w: Number | None = number(omit_none=True)
    mig: bool | None = flag(omit_none=True)
    mig_parent_uuid: str | None = text(omit_none=True)
    ranks: Number | None = number(omit_none=True)
    nodes: Number | None = number(omit_none=True)
    names: JsonObject | None = free_object(omit_none=True)
    serial: str | None = text(omit_none=True)  # the board's serial number (a fleet's per-GPU history)
    module_id: Number | None = number(omit_none=True)  # the GPU's slot on its baseboard (NVML's module id)
    vbios: str | None = text(omit_none=True)  # the GPU's firmware version
    # What an acceptance check reads of the GPU, at the end of the run: PCIe link generation and
    # width against their maximum, uncorrectable ECC errors, remapped rows pending or failed.
    health: JsonObject | None = free_object(omit_none=True)


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class RankRecord(Section):
    """One rank of a job as the merged file's `ranks` section keeps it; `cases` are its figures
    of each case (objects with the plan `index`)."""

    rank: Number | None = number()
    local_rank: Number | None = number(omit_none=True)  # the rank's slot on its node
    node_rank: Number | None = number(omit_none=True)
    host: str | None = text()
    device: JsonObject | None = free_object()
    status: str | None = text()
    cases: Json = free()


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class RunRecord(Section):
    """A run file: "wattbench.run/1" (one process), "/2" (a job's merged file) or a rank's
    "wattbench.shard/1" (`rank` and `failure` sections)."""

    schema: str | None = text()
    run: RunInfo | None = section(RunInfo)
    host: HostRecord | None = section(HostRecord)
    devices: tuple[DeviceRecord, ...] | None = sections(DeviceRecord)
    cases: tuple[CaseRecord, ...] | None = sections(CaseRecord)
    workloads: JsonObject | None = free_object(omit_none=True)
    ranks: tuple[RankRecord, ...] | None = sections(RankRecord, omit_none=True)
    rank: JsonObject | None = free_object(omit_none=True)
    failure: JsonObject | None = free_object(omit_none=True)

    @classmethod
    def from_json(cls, doc: object, *, shard: bool = False) -> RunRecord:
        """The record of a run document (`shard`: of a rank's shard), checked: RecordError
        ("damaged result file: ...", "unknown schema ...") naming the first thing wrong."""
        if not isinstance(doc, dict):
            raise RecordError(f"not a wattbench {'shard' if shard else 'result file'} (top level is not an object)")
        schema = doc.get("schema")
        if shard:
            if schema != SHARD_SCHEMA:
                raise RecordError(f"not a shard: schema {schema!r}, a shard's is {SHARD_SCHEMA!r}")
        elif schema == SHARD_SCHEMA:
            raise RecordError(SHARD_IS_NOT_A_RUN)
        elif schema not in RUN_SCHEMAS:
            raise RecordError(f"unknown schema {schema!r}; this wattbench reads {' and '.join(map(repr, RUN_SCHEMAS))}")
        what = "shard" if shard else "result file"
        _check_sections(doc, what)
        if schema == SCHEMA_V2:
            _check_ranks(doc)
        if shard:
            _check_shard(doc)
        return cls._parse_run(doc, what)

    @classmethod
    def _parse_run(cls, doc: Mapping[str, object], what: str) -> RunRecord:
        specs = cls.specs()
        values: dict[str, object] = {}
        extra: JsonObject = {}
        damaged: dict[object, str] = {}  # device id -> why its entry cannot be read
        for key, value in doc.items():
            if key == "cases" and isinstance(value, list):
                values[key] = tuple(_case(i, c, what, damaged) for i, c in enumerate(value))
            elif key == "devices" and isinstance(value, list):
                values[key] = tuple(_device(d, damaged) for d in value)
            elif key in specs:
                try:
                    values[key] = specs[key].parse(value, key)
                except RecordError as exc:
                    raise RecordError(f"damaged {what}: {exc}") from None
            else:
                extra[key] = value  # type: ignore[assignment]
        return cls.build(values, tuple(doc), extra)

    def case_list(self) -> tuple[CaseRecord, ...]:
        return self.cases or ()


def _case(i: int, doc: object, what: str, damaged: Mapping[object, str]) -> CaseRecord:
    """Case `i`; a mistyped field of it, or of the device entry it names, is a RecordError
    naming the case."""
    if not isinstance(doc, dict):
        raise RecordError(f"damaged {what}: case {i} is not an object")
    try:
        device = doc.get("device")
        if isinstance(device, str) and device in damaged:
            raise RecordError(f"device {device}: {damaged[device]}")
        return CaseRecord.parse(doc)
    except RecordError as exc:
        raise RecordError(f"damaged {what}: case {i}: {exc}") from None


def _device(doc: object, damaged: dict[object, str]) -> DeviceRecord | object:
    """A device entry. One that is not an object, or has a field of the wrong type, is kept as
    it is: it is an error only for a case run on it (`damaged` says why, by device id; the
    devices come before the cases in a file)."""
    if not isinstance(doc, dict):
        return doc
    try:
        return DeviceRecord.parse(doc)
    except RecordError as exc:
        device_id = doc.get("id")
        if isinstance(device_id, str):  # an id that is not text names no case's device
            damaged[device_id] = str(exc)
        return doc


def _check_sections(doc: Mapping[str, object], what: str) -> None:
    """What every run document has, whatever its version (and a shard too): the run and host
    sections with their required keys, a known run status, devices and cases as lists, each case
    an object with its required keys and a known status."""
    for name, keys in REQUIRED.items():
        part = doc.get(name)
        if not isinstance(part, dict):
            raise RecordError(f"damaged {what}: missing section {name!r}")
        missing = [k for k in keys if k not in part]
        if missing:
            raise RecordError(f"damaged {what}: {name} lacks {', '.join(missing)}")
    run, cases = doc["run"], doc.get("cases")
    status = run.get("status") if isinstance(run, dict) else None
    if status not in RUN_STATUSES:
        raise RecordError(f"damaged {what}: unknown run status {status!r}")
    if not isinstance(doc.get("devices"), list) or not isinstance(cases, list):
        raise RecordError(f"damaged {what}: devices and cases must be lists")
    for i, case in enumerate(cases):
        if not isinstance(case, dict):
            raise RecordError(f"damaged {what}: case {i} is not an object")
        missing = [k for k in REQUIRED_CASE if k not in case]
        if missing:
            raise RecordError(f"damaged {what}: case {i} lacks {', '.join(missing)}")
        if case["status"] not in CASE_STATUSES:
            raise RecordError(f"damaged {what}: case {i} has unknown status {case['status']!r}")


def _check_ranks(doc: Mapping[str, object]) -> None:
    """A run/2 file's `ranks` section: a non-empty list of objects, each with a whole `rank`
    and a list of `cases` (the per-rank table reads them)."""
    ranks = doc.get("ranks")
    if not isinstance(ranks, list) or not ranks:
        raise RecordError("damaged result file: a wattbench.run/2 file needs a non-empty `ranks` list")
    for i, entry in enumerate(ranks):
        if not isinstance(entry, dict) or not _whole(entry.get("rank")):
            raise RecordError(f"damaged result file: ranks[{i}] is not an object with a whole rank number")
        cases = entry.get("cases")
        if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
            raise RecordError(f"damaged result file: ranks[{i}].cases is not a list of objects")


def _check_shard(doc: Mapping[str, object]) -> None:
    """A shard's `rank` object (whole `rank` < `world_size`), a whole plan `index` on each case
    that has one (merging matches the ranks' records of a case by it), and its `failure`."""
    rank = doc.get("rank")
    if not isinstance(rank, dict) or not _whole(rank.get("rank")) or not _whole(rank.get("world_size")):
        raise RecordError("damaged shard: `rank` must be an object with whole `rank` and `world_size`")
    if rank["rank"] >= rank["world_size"]:
        raise RecordError(f"damaged shard: rank {rank['rank']} of a world of {rank['world_size']}")
    cases = doc.get("cases")
    for i, case in enumerate(cases if isinstance(cases, list) else []):
        if isinstance(case, dict) and case.get("index") is not None and not _whole(case.get("index")):
            raise RecordError(f"damaged shard: case {i} has a plan `index` that is not a whole number")
    failure = doc.get("failure")
    if failure is not None and (not isinstance(failure, dict) or not _whole(failure.get("rank"))):
        raise RecordError("damaged shard: `failure` must be null or an object with a whole `rank`")
