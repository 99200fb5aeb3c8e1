"""How a case's parameters are written: the exact form in case ids, the compact form in tables.

Both sides use this module and neither needs the workload registry for it: the run writes each
workload's parameter kinds into the result file (`workloads` section, see `ParamSchema`), so
the reading side formats a case from the file alone and never imports a workload (or torch).

Compact form, for people: byte sizes in units (256MiB), element types short (bf16), a shape
said once (2048³ for m=n=k=2048, 4096×4096×1024 otherwise), booleans as true/false; tokens are
separated by spaces and never contain one, so a table may wrap between tokens, never inside one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.units import format_size_exact

SHORT_DTYPES = {
    "float64": "fp64",
    "float32": "fp32",
    "tf32": "tf32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "float8": "fp8",
    "float8_e4m3fn": "fp8e4m3",
    "float8_e5m2": "fp8e5m2",
    "int8": "int8",
}
SUPERSCRIPT = {2: "²", 3: "³", 4: "⁴"}


@dataclass(frozen=True)
class ParamSchema:
    """What the reading side knows of a workload's parameters: each one's kind ("int", "bytes",
    "choice", "bool") and the parameters that together form a shape (matmul's m, n, k)."""

    kinds: Mapping[str, str] = field(default_factory=dict)
    shape: tuple[str, ...] = ()
    operating: tuple[str, ...] = ()  # parameters whose values are operating points of one case (llm's batch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": {name: {"kind": kind} for name, kind in self.kinds.items()},
            "shape": list(self.shape),
            "operating": list(self.operating),
        }

    @classmethod
    def from_dict(cls, doc: Any) -> ParamSchema:
        """From a result file's `workloads[name]` entry; an empty schema for anything else (older
        files), which prints every value as it is."""
        if not isinstance(doc, Mapping):
            return cls()
        params = doc.get("params")
        kinds = (
            {str(k): str(v.get("kind")) for k, v in params.items() if isinstance(v, Mapping)}
            if isinstance(params, Mapping)
            else {}
        )
        shape, operating = doc.get("shape"), doc.get("operating")
        return cls(
            kinds,
            tuple(str(s) for s in shape) if isinstance(shape, list) else (),
            tuple(str(s) for s in operating) if isinstance(operating, list) else (),
        )


def exact_value(value: Any, kind: str | None) -> str:
    """A value as case ids write it: booleans lower case, byte sizes in exact units."""
    if isinstance(value, bool):
        return str(value).lower()
    if kind == "bytes" and isinstance(value, int):
        return format_size_exact(value)
    return str(value)


def format_exact(params: Iterable[tuple[str, Any]] | Mapping[str, Any], schema: ParamSchema = ParamSchema()) -> str:
    """'k=v,k=v' in declaration order: the form used in case ids, which match cases across runs."""
    items = params.items() if isinstance(params, Mapping) else params
    return ",".join(f"{k}={exact_value(v, schema.kinds.get(k))}" for k, v in items)


def canonical_key(workload: str, params: Mapping[str, Any]) -> str:
    """The identity of a case across runs and wattbench versions: raw values, no units, no device."""
    return f"{workload}(" + ",".join(f"{k}={exact_value(v, None)}" for k, v in params.items()) + ")"


def _shape_token(values: Sequence[Any]) -> str:
    if len(set(values)) == 1 and len(values) in SUPERSCRIPT:
        return f"{values[0]}{SUPERSCRIPT[len(values)]}"
    return "×".join(str(v) for v in values)


def compact_tokens(
    params: Mapping[str, Any], schema: ParamSchema = ParamSchema(), only: Iterable[str] | None = None
) -> list[str]:
    """The parameters (or those named in `only`) as compact tokens, in the order given.

    The shape becomes one token where all its parameters are shown and are whole numbers;
    `dtype` shows its short name alone, the report's `scope` (what part ran) its value alone; every
    other parameter shows as key=value.
    """
    wanted = None if only is None else set(only)  # once: a generator is used up after one pass
    names = [k for k in params if wanted is None or k in wanted]
    shape = [k for k in schema.shape if k in names]
    use_shape = (
        bool(shape)
        and len(shape) == len(schema.shape)
        and all(isinstance(params[k], int) and not isinstance(params[k], bool) for k in shape)
    )
    tokens: list[str] = []
    for name in names:
        value = params[name]
        if use_shape and name in shape:
            if name == shape[0]:
                tokens.append(_shape_token([params[k] for k in shape]))
            continue
        if name == "dtype" and isinstance(value, str):
            tokens.append(SHORT_DTYPES.get(value, value))
            continue
        if name == "scope" and isinstance(value, str):  # the report's slice note: '8_of_80_layers'
            tokens.append(value.replace(" ", "_"))
            continue
        tokens.append(f"{name}={exact_value(value, schema.kinds.get(name))}".replace(" ", "_"))
    return tokens


def format_compact(params: Mapping[str, Any], schema: ParamSchema = ParamSchema(), only: Iterable[str] | None = None) -> str:
    """compact_tokens joined by spaces: '2048³ bf16', 'op=triad size=256MiB fp32'."""
    return " ".join(compact_tokens(params, schema, only))


def shared_params(rows: Sequence[Mapping[str, Any]], schema: ParamSchema = ParamSchema()) -> tuple[list[str], list[str]]:
    """(names the same in every row, names that differ), in the first row's order. A shape
    counts as one: shared only when all of it is, so 2048³ is never split into m=... n=..."""
    if not rows:
        return [], []
    names = list(dict.fromkeys(k for row in rows for k in row))
    missing = object()
    same = {k for k in names if all(row.get(k, missing) == rows[0].get(k, missing) for row in rows)}
    if schema.shape and not all(k in same for k in schema.shape if k in names):
        same -= set(schema.shape)
    return [k for k in names if k in same], [k for k in names if k not in same]


def shown_params(params: Mapping[str, Any], details: Mapping[str, Any], ran: bool = False) -> dict[str, Any]:
    """A case's parameters as reports show them, from its `params` and `details`.

    - With `ran` (a run's own table), one the workload's details resolve (attention's
      backend=auto, with details.backend the SDPA kernel that ran) reads 'auto→flash'; a kernel
      torch did not name reads 'auto→?'.
    - Those named in details.implied are left out: another parameter already says them (llm's
      dimensions that are the preset's own: model=llama-3-8b says d_model=4096).
    - details.scope, where the case measured part of what its parameters name (llm's '8 of 80
      layers'), is added as `scope`, so a slice's figures are never read as the whole model's.
    """
    shown = dict(params)
    if ran:
        for key, what in details.items():
            if key in shown and isinstance(what, str) and what and what != shown[key]:
                shown[key] = f"{shown[key]}→{'?' if what.startswith('unknown') else what}"
    implied = details.get("implied")
    if isinstance(implied, list):
        shown = {k: v for k, v in shown.items() if k not in implied}
    said = details.get("scope")
    return shown | ({"scope": said} if isinstance(said, str) and said else {})
