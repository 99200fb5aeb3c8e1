"""Parsing and formatting of quantities: byte sizes with units, rates in human units.

Decimal prefixes for rates and sizes we report (1 GB = 1e9 bytes, 1 TFLOP = 1e12 FLOP), as the
design asks; binary prefixes (KiB, MiB, GiB) are accepted on input where users type sizes.
"""

from __future__ import annotations

import math
import re


def finite_number(value: object) -> float | None:
    """A value read from JSON or a record as a float: None unless it is a finite int or float
    (a bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


_SIZE_SUFFIXES = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(text: str | int) -> int:
    """Parse a byte size such as ``256MiB``, ``1GB``, ``1.5e9`` or ``4096`` into bytes.

    Raises ValueError with the accepted forms when the text is not a size.
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a byte size")
    if isinstance(text, int):
        return text
    match = _SIZE_RE.match(str(text))
    if not match or match.group(2).lower() not in _SIZE_SUFFIXES:
        raise ValueError(
            f"{text!r} is not a byte size (use a number with an optional unit: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
        )
    value = float(match.group(1)) * _SIZE_SUFFIXES[match.group(2).lower()]
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(value)


def format_bytes(n: float) -> str:
    """Format a byte count with a binary prefix, as sizes of memory are usually quoted (256 MiB)."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n:.0f} B"


def format_size_exact(n: int) -> str:
    """An exact, compact size that parse_bytes reads back: 256MiB, 1GB, 1000B."""
    for unit, scale in (
        ("TiB", 1024**4),
        ("GiB", 1024**3),
        ("MiB", 1024**2),
        ("KiB", 1024),
        ("TB", 1000**4),
        ("GB", 1000**3),
        ("MB", 1000**2),
        ("KB", 1000),
    ):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n}B"


_PREFIXES = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))
_UNIT_LABEL = {"FLOP": "FLOP", "byte": "B", "token": "tok"}


def format_rate(value: float | None, unit: str) -> str:
    """Format a throughput in work units per second with a decimal prefix: '412.3 GFLOP/s', '31.2 GB/s'."""
    if value is None or not math.isfinite(value):
        return "-"
    label = _UNIT_LABEL.get(unit, unit)
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.4g} {prefix}{label}/s"
    return f"{value:.3g} {label}/s"


def format_efficiency(value: float | None, unit: str) -> str:
    """Work per joule (= throughput per watt) with a decimal prefix: '1.94 GFLOP/J', '310 MB/J'."""
    text = format_rate(value, unit)
    return text[:-2] + "/J" if text.endswith("/s") else text


_ENERGY_PREFIXES = ((1.0, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f"))


def format_energy_per_work(efficiency: float | None, unit: str) -> str:
    """Joules per unit of work from work per joule: '515 pJ/FLOP', '32 pJ/B'."""
    if efficiency is None or not math.isfinite(efficiency) or efficiency <= 0:
        return "-"
    joules = 1.0 / efficiency
    label = _UNIT_LABEL.get(unit, unit)
    for scale, prefix in _ENERGY_PREFIXES:
        if joules >= scale:
            return f"{joules / scale:.3g} {prefix}J/{label}"
    return f"{joules / 1e-15:.3g} fJ/{label}"


def format_joules(joules: float | None) -> str:
    """An amount of energy with J, kJ or MJ: '7 kJ', '12.3 J', '0.512 J'."""
    if joules is None or not math.isfinite(joules):
        return "-"
    for scale, unit in ((1e6, "MJ"), (1e3, "kJ")):
        if abs(joules) >= scale:
            return f"{joules / scale:.3g} {unit}"
    return f"{joules:.3g} J"


def format_seconds(value: float | None) -> str:
    """Format a duration with s, ms, us or ns so that three significant digits show."""
    if value is None or not math.isfinite(value):
        return "-"
    for scale, suffix in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{value / 1e-9:.3g} ns"
