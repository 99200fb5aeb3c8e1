"""The workload contract: set up state on a device, run one iteration, say how much work that
is, check the output. Workloads never read a clock or synchronise; the harness does both.

A workload declares its parameters as `Param`s; the harness parses CLI strings and TOML values
through them, so every workload gets the same validation and the same error messages.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch

from bench.errors import Unsupported, UsageError
from bench.measure import runtime
from bench.measure.hardware import DeviceInfo
from bench.measure.runtime import Graph
from bench.params import ParamSchema
from bench.units import parse_bytes

T = TypeVar("T")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Param:
    """One parameter of a workload.

    kind: "int" (a whole number > 0), "bytes" (a size with units, > 0), "choice" (one of
    `choices`), "bool", "device" (a GPU, "cuda:N"; a bare N means the same). A default of None
    means the workload derives it from the device (or, for a "device", that none is named);
    then `auto` says how, for `wattbench list`.
    """

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    auto: str | None = None

    def parse(self, raw: Any, workload: str) -> Any:
        """Parse a CLI string or a TOML value; UsageError naming the parameter and what is valid."""
        where = f"{workload}: parameter {self.name}"
        if self.kind == "choice":
            text = str(raw).strip().lower()
            if text not in self.choices:
                raise UsageError(f"{where}: {raw!r} is not valid; valid: {', '.join(self.choices)}")
            return text
        if self.kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise UsageError(f"{where}: {raw!r} is not a boolean; valid: true, false")
        if self.kind == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise UsageError(f"{where}: {raw!r} is not a whole number")
            try:
                value = int(str(raw).strip().replace("_", "")) if not isinstance(raw, (int, float)) else int(raw)
            except ValueError:
                raise UsageError(f"{where}: {raw!r} is not a whole number") from None
            if value <= 0:
                raise UsageError(f"{where}: {value} must be a positive whole number")
            return value
        if self.kind == "device":
            text = str(raw).strip().lower()
            index = text.removeprefix("cuda:")
            if isinstance(raw, bool) or not (index.isascii() and index.isdigit()):
                raise UsageError(f"{where}: {raw!r} is not a GPU; valid: cuda:N (N = 0, 1, ...)")
            return f"cuda:{int(index)}"
        if self.kind == "bytes":
            try:
                value = parse_bytes(raw)
            except ValueError as exc:
                raise UsageError(f"{where}: {exc}") from None
            if value <= 0:
                raise UsageError(f"{where}: {raw} must be a positive size")
            return value
        raise AssertionError(f"unknown parameter kind {self.kind}")

    def describe_default(self) -> str:
        if self.default is None:
            return self.auto or "auto"
        return str(self.default).lower() if isinstance(self.default, bool) else str(self.default)

    def describe_valid(self) -> str:
        return {
            "choice": ", ".join(self.choices),
            "bool": "true, false",
            "int": "whole number > 0",
            "bytes": "size > 0, e.g. 64MiB, 1GB",
            "device": "cuda:N",
        }[self.kind]


@dataclass(frozen=True)
class Work:
    """Work done by one iteration, in `unit` (the throughput unit), plus any other terms."""

    unit: str
    per_iter: float
    terms: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Verification:
    """Output check against a reference. `max_rel_error` = max |out - ref| / max |ref|.

    An output with NaN or inf in it has an infinite error (a NaN error is taken as one), which
    never passes; the result file, strict JSON, records it as null.
    """

    max_rel_error: float
    tolerance: float

    def __post_init__(self) -> None:
        if math.isnan(self.max_rel_error):  # as max_rel_error() reports a non-finite output
            object.__setattr__(self, "max_rel_error", math.inf)

    @property
    def passed(self) -> bool:
        return math.isfinite(self.max_rel_error) and self.max_rel_error <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        error = self.max_rel_error if math.isfinite(self.max_rel_error) else None  # JSON has no inf
        return {"max_rel_error": error, "tolerance": self.tolerance, "passed": self.passed}


def max_rel_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """max |output - reference| / max |reference|, computed in float64 on the CPU.

    Normalising by the reference's largest magnitude keeps the measure meaningful where single
    reference elements are near zero, as they are in random data. One read back to the host
    (a runtime without data answers scale 1, difference 0).
    """
    out = output.detach().to("cpu", torch.float64)
    ref = reference.detach().to("cpu", torch.float64)
    scale, diff = runtime.current().to_host(torch.stack([ref.abs().max(), (out - ref).abs().max()]), [1.0, 0.0])
    if not math.isfinite(diff):
        return math.inf
    return diff / scale if scale > 0 else diff


def seeded_generator(device: torch.device, seed: int = 1234) -> torch.Generator:
    """A generator with a fixed seed on `device`, so every run draws the same random inputs."""
    return runtime.current().generator(device, seed)


class Workload(ABC):
    """One workload family. Subclasses set `name`, `summary`, `params` and implement the rest.

    Life of an instance: `setup()` (may raise `Unsupported`), `run()` once, `verify()`, then the
    harness calls `run()` many times under its timer, then `teardown()`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    params: ClassVar[tuple[Param, ...]]
    launches_per_iter: int = 1  # about how many kernels one iteration queues (sizes the launch-bound probe)
    shape: ClassVar[tuple[str, ...]] = ()  # parameters printed together as one shape (2048³)
    # Parameters whose values are operating points of the same case rather than other cases (the
    # serving batch of an llm decode): `report --frontier` puts them on one frontier.
    operating: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Mapping[str, Any], device: DeviceInfo) -> None:
        self.p = dict(params)
        self.device = device
        self.torch_device = device.torch_device
        self.graph: Graph | None = None  # the captured iteration of a graph=true case (`capture`)

    @property
    def gpu(self) -> bool:
        """True on a GPU: the one property workloads branch on for the device's kind (its
        tensors live on `torch_device`, which a test may point elsewhere to trace a GPU branch)."""
        return self.device.kind == "cuda"

    @property
    def rocm(self) -> bool:
        """True on an AMD GPU under ROCm (a `gpu` too): where a dtype's format, an attention
        library or the collective library differ from NVIDIA's."""
        return self.gpu and self.device.rocm

    @property
    def graphed(self) -> bool:
        """True when the case asks to replay its iteration from a CUDA graph (`graph=true`)."""
        return bool(self.p.get("graph", False))

    def capture(self, body: Callable[[], T]) -> T:
        """Capture `body` (one iteration on static tensors) into `self.graph`, which `run()` then
        replays; returns the static outputs `body` returned during capture."""
        self.graph, out = runtime.current().capture(self.torch_device, body)
        return out

    def require_cuda_for_graph(self) -> None:
        """Unsupported(reason) for `graph=true` off a CUDA device: a case skipped, not failed."""
        if self.graphed and not self.gpu:
            raise Unsupported("graph=true needs a CUDA GPU (it captures a CUDA graph); on the CPU use graph=false")

    @classmethod
    def schema(cls) -> ParamSchema:
        """What a result file records of the parameters, so reports can print them without
        importing the workload."""
        return ParamSchema({p.name: p.kind for p in cls.params}, cls.shape, cls.operating)

    @classmethod
    def param(cls, name: str) -> Param:
        for p in cls.params:
            if p.name == name:
                return p
        valid = ", ".join(p.name for p in cls.params)
        raise UsageError(f"{cls.name}: unknown parameter {name!r}; valid: {valid}")

    @classmethod
    def resolve(cls, given: Mapping[str, Any], device: DeviceInfo) -> dict[str, Any]:
        """Parsed, complete parameters for one case on `device`: given values plus defaults.

        Subclasses fill device-dependent defaults (those declared with default None) by
        overriding `derive`.
        """
        values = {p.name: p.default for p in cls.params}
        for name, raw in given.items():
            values[name] = cls.param(name).parse(raw, cls.name)
        return cls.derive(values, device)

    @classmethod
    def derive(cls, values: dict[str, Any], device: DeviceInfo) -> dict[str, Any]:
        return values

    def setup(self) -> None:  # noqa: B027 - optional hook: a workload may need no set-up
        """Allocate inputs on the device. Raise `Unsupported(reason)` if the device cannot run it."""

    @abstractmethod
    def run(self) -> None:
        """One iteration. Must not read a clock or synchronise."""

    @abstractmethod
    def work(self) -> Work:
        """Work per iteration."""

    @abstractmethod
    def verify(self) -> Verification:
        """Check the output of the last `run()` against a reference."""

    def details(self) -> dict[str, Any]:
        """Facts about what ran that the parameters do not fix (attention: the SDPA kernel torch
        chose), as JSON values; the runner records them in the case's `details`. Called after
        setup. Empty by default."""
        return {}

    def teardown(self) -> None:  # noqa: B027 - optional hook: most workloads change no global setting
        """Restore any process-wide setting changed in setup (the harness drops the instance)."""
