"""Only the device layer imports a vendor library: no module under bench/ or workloads/ outside
bench/device/ imports pynvml, amdsmi, or a BMC's client (pyghmi, redfish), not even lazily inside a function (a static guard, as the
reading side's torch test is; see bench/device/__init__.py)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
VENDOR_LIBRARIES = ("pynvml", "amdsmi", "pyghmi", "redfish")
DEVICE_LAYER = ROOT / "bench" / "device"


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) for every import in a module at any depth: import, from-import, and
    importlib.import_module / __import__ of a literal name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return sorted(found)


def _vendor_imports(path: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
    """'FILE:LINE imports NAME' for each vendor library the module imports."""
    return [
        f"{path.relative_to(root).as_posix()}:{line} imports {name}"
        for line, name in _imported(ast.parse(path.read_text()))
        if any(name == lib or name.startswith(lib + ".") for lib in VENDOR_LIBRARIES)
    ]


def test_only_the_device_layer_imports_a_vendor_library():
    files = sorted(p for folder in ("bench", "workloads") for p in (ROOT / folder).rglob("*.py"))
    assert len(files) > 50  # the walk found the tree
    outside = [p for p in files if DEVICE_LAYER not in p.parents]
    offenders = [line for path in outside for line in _vendor_imports(path)]
    assert offenders == [], "a vendor library imported outside bench/device/: " + "; ".join(offenders)


def test_the_device_layer_imports_each_vendor_library_in_one_module():
    importers = {
        line.split(" imports ")[1].split(".")[0]: line.split(":")[0]
        for p in sorted(DEVICE_LAYER.rglob("*.py"))
        for line in _vendor_imports(p)
    }
    files = sorted(p.relative_to(ROOT).as_posix() for p in DEVICE_LAYER.rglob("*.py") if _vendor_imports(p))
    assert importers == {
        "pynvml": "bench/device/nvidia/nvml.py",
        "amdsmi": "bench/device/amd/smi.py",
        "pyghmi": "bench/device/bmc/ipmi.py",
        "redfish": "bench/device/bmc/redfish.py",
    }
    assert files == [
        "bench/device/amd/smi.py",
        "bench/device/bmc/ipmi.py",
        "bench/device/bmc/redfish.py",
        "bench/device/nvidia/nvml.py",
    ]


def test_the_guard_sees_every_form_of_import(tmp_path):
    """The guard itself: top-level, from-, dotted, function-local and importlib imports are caught,
    a name that merely starts the same is not."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nimport pynvml\nfrom amdsmi import amdsmi_init\nimport amdsmi.interface as a\n"
        "import pynvml_utils_not_it\n"
        "def later():\n    if True:\n        from pynvml import nvmlInit\n"
        "    importlib.import_module('amdsmi')\n    return __import__('pynvml')\n"
    )
    assert _vendor_imports(sample, tmp_path) == [
        "sample.py:2 imports pynvml",
        "sample.py:3 imports amdsmi",
        "sample.py:4 imports amdsmi.interface",
        "sample.py:8 imports pynvml",
        "sample.py:9 imports amdsmi",
        "sample.py:10 imports pynvml",
    ]
