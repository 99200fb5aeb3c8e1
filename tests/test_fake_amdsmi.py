"""The simulated AMD SMI (tests/fake_amdsmi.py) cannot drift from the real one: every function it
offers exists in the pinned amdsmi wheel's amdsmi_interface.py with the same parameter names, and
every dict key it returns appears as a string in that function's source. The file is parsed with
`ast`, never imported (without ROCm, importing amdsmi prints to stdout and raises KeyError)."""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
from pathlib import Path

import pytest

from tests import fake_amdsmi
from tests.fake_amdsmi import FUNCTIONS, FakeAmdSmiState, make_module

PINNED = "7.0.2"
# Keys the fake returns on purpose that 7.0.2 no longer has: the energy count's name in older
# releases (wattbench accepts both, as Zeus does).
LEGACY_KEYS = {"amdsmi_get_energy_count": {"power"}}


def _interface() -> Path:
    try:
        dist = importlib.metadata.distribution("amdsmi")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"amdsmi=={PINNED} is not installed (it is in the `test` extra)")
    assert dist.version == PINNED, f"amdsmi {dist.version} installed; the fake models {PINNED}"
    return Path(str(dist.locate_file("amdsmi/amdsmi_interface.py")))


@pytest.fixture(scope="module")
def real() -> dict[str, ast.FunctionDef]:
    tree = ast.parse(_interface().read_text(encoding="utf-8"))
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _string_constants(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _keys(value: object) -> set[str]:
    return set(value) if isinstance(value, dict) else set()


def _module():
    state = FakeAmdSmiState(privileged=True)
    state.gpus[0].determinism_supported = True  # so every setter answers
    mod = make_module(state)
    mod.amdsmi_init()
    return mod, mod.amdsmi_get_processor_handles()[0]


def test_every_function_exists_with_the_same_parameters(real):
    mod, _ = _module()
    offered = sorted(name for name in vars(mod) if name.startswith("amdsmi_"))
    assert offered == sorted(FUNCTIONS), "FUNCTIONS must list every function the fake offers"
    for name in offered:
        assert name in real, f"{name} is not in amdsmi {PINNED}"
        want = [a.arg for a in real[name].args.args]
        got = list(inspect.signature(getattr(mod, name)).parameters)
        assert got == want, f"{name}: the fake takes {got}, amdsmi {PINNED} takes {want}"


def test_every_returned_key_is_in_the_real_function(real):
    mod, handle = _module()
    for name, kwargs in FUNCTIONS.items():
        if kwargs is None:
            continue
        returned = _keys(getattr(mod, name)(handle, **kwargs))
        missing = returned - _string_constants(real[name]) - LEGACY_KEYS.get(name, set())
        assert not missing, f"{name} returns keys amdsmi {PINNED} does not: {sorted(missing)}"


def test_the_legacy_energy_key_and_the_mi200_profile_return_known_keys_too(real):
    state = FakeAmdSmiState(gpus=[fake_amdsmi.mi250x(energy_key="power")])
    mod = make_module(state)
    mod.amdsmi_init()
    handle = mod.amdsmi_get_processor_handles()[0]
    assert _keys(mod.amdsmi_get_energy_count(handle)) == {"power", "counter_resolution", "timestamp"}
    assert _keys(mod.amdsmi_get_power_info(handle)) <= _string_constants(real["amdsmi_get_power_info"])


def test_enums_and_status_codes_match_the_wheel():
    """The enum members and status codes the fake names exist in amdsmi (interface and wrapper)."""
    interface = _interface()
    source = interface.read_text(encoding="utf-8")
    wrapper = (interface.parent / "amdsmi_wrapper.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    for cls in (
        fake_amdsmi.AmdSmiInitFlags,
        fake_amdsmi.AmdSmiClkType,
        fake_amdsmi.AmdSmiTemperatureType,
        fake_amdsmi.AmdSmiTemperatureMetric,
        fake_amdsmi.AmdSmiMemoryType,
        fake_amdsmi.AmdSmiDevPerfLevel,
    ):
        assert cls.__name__ in classes, cls.__name__
        members = {
            t.id
            for node in classes[cls.__name__].body
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        assert set(cls.__members__) <= members, f"{cls.__name__}: {sorted(set(cls.__members__) - members)}"
    for name, value in vars(fake_amdsmi).items():
        if name.startswith("AMDSMI_STATUS_"):
            assert f"\n{name} = {value}\n" in wrapper, f"{name} = {value} is not in amdsmi_wrapper.py"
    exceptions = (interface.parent / "amdsmi_exception.py").read_text(encoding="utf-8")
    assert "class AmdSmiLibraryException(AmdSmiException)" in exceptions
