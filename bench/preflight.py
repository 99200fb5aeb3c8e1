"""`make gpu-check`'s first step: can this python3 import what the check needs?

gpu-check installs nothing: it runs the machine's python3 with this checkout on PYTHONPATH. Where
that python3 lacks a dependency, pytest would stop at test collection with an error about some
conftest line. This names every missing module in one line instead, with the pip names, and exits 1.
It uses the standard library only, so it runs on any python3. The GPU vendor libraries are looked
up, not imported, and the device layer says which: those of the vendors whose kernel driver is
loaded on this machine (pynvml where NVIDIA's is, amdsmi where AMD's amdgpu is; pynvml where
neither is), since only bench/device/ imports them.

    python3 -m bench.preflight        (from the repository root, or with it on PYTHONPATH)
"""

from __future__ import annotations

import importlib
import sys

from bench.device import library_found, vendor_libraries

# module -> the pip distribution that provides it
REQUIRED = {
    "torch": "torch",
    "numpy": "numpy",
    "pandas": "pandas",
    "psutil": "psutil",
    "rich": "rich",
    "pytest": "pytest",
    **vendor_libraries(machine=True),  # pynvml: nvidia-ml-py; amdsmi on an AMD machine
}
LOOKED_UP_ONLY = tuple(vendor_libraries())
MIN_PYTHON = (3, 11)


def problems(required: dict[str, str] | None = None) -> dict[str, str]:
    """Module -> why it cannot be used ("not installed", or the import error's first line)."""
    out: dict[str, str] = {}
    for module in required or REQUIRED:
        if module in LOOKED_UP_ONLY:
            if not library_found(module):
                out[module] = "not installed"
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            out[module] = "not installed" if exc.name == module else _first_line(exc)
        except Exception as exc:  # a broken install (an ABI mismatch, a missing shared library)
            out[module] = _first_line(exc)
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def message(found: dict[str, str], required: dict[str, str] | None = None, version: tuple[int, ...] | None = None) -> str | None:
    """The one line to print, or None when nothing is missing."""
    required = required or REQUIRED
    version = tuple(sys.version_info[:3]) if version is None else version
    parts = []
    if version[:2] < MIN_PYTHON:
        parts.append(f"Python {'.'.join(map(str, MIN_PYTHON))}+ (this is {'.'.join(map(str, version))})")
    if found:
        names = ", ".join(m if why == "not installed" else f"{m} ({why})" for m, why in found.items())
        packages = " ".join(dict.fromkeys(required[m] for m in found))
        parts.append(f"{names} (pip install {packages})")
    if not parts:
        return None
    return (
        f"gpu-check: {sys.executable} lacks {'; '.join(parts)}; gpu-check installs nothing: "
        "install them for this python3 (or run make gpu-check PYTHON=...)"
    )


def main() -> int:
    line = message(problems())
    if line:
        print(line, file=sys.stderr)
        return 1
    print(f"gpu-check: {sys.executable} has {', '.join(REQUIRED)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
