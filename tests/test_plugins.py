"""Device plugins (`wattbench.devices` entry points, docs/plugins.md): a package found on the path
adds its devices to `wattbench info`; a broken or mismatched one is skipped with one warning line;
without it, no trace. Each case runs wattbench in a subprocess with PYTHONPATH on a temporary
folder holding the plugin module and a hand-made `*.dist-info`, so this process's environment and
its vendor cache stay as they were."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = """
from __future__ import annotations

import time

from bench.device.base import DeviceUnavailable, GpuInfo, GpuVendor, Inventory
from bench.monitor.base import PowerSource, Reading

NPUS = (GpuInfo(index=0, uuid="ACME-0001", name="ACME NPU 9000", pci_bus_id="0000:41:00.0",
                memory_bytes=64 * 2**30, power_limit_w=350.0),)


class AcmePower(PowerSource):
    power_source = "acme_power"

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id

    def read(self) -> Reading:
        return Reading(time.monotonic(), power_w=42.0)


class AcmeNpu(GpuVendor):
    name = "acme"
    api_version = API

    def inventory(self) -> Inventory:
        return Inventory(driver_version="acme 1.0", cuda_driver_version=None, gpus=NPUS)

    def power_source(self, uuid: str, device_id: str, probe: bool = True) -> PowerSource:
        if self.inventory().by_uuid(uuid) is None:
            raise DeviceUnavailable(f"acme: no NPU {uuid}")
        return AcmePower(device_id)
"""


def _install(folder: Path, api: int = 1, target: str = "acme_npu:AcmeNpu") -> Path:
    """The plugin as an installed distribution would leave it: its module and a dist-info."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "acme_npu.py").write_text(PLUGIN.replace("API", str(api)))
    info = folder / "wattbench_acme-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wattbench-acme\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[wattbench.devices]\nacme = {target}\n")
    return folder


def _wattbench(*args: str, plugin: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (plugin, ROOT) if p is not None)
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_an_installed_plugin_adds_its_devices_to_info_and_without_it_no_trace(tmp_path: Path) -> None:
    plugin = _install(tmp_path / "site")
    done = _wattbench("info", "--json", plugin=plugin)
    assert done.returncode == 0, done.stderr
    (npu,) = json.loads(done.stdout)["accelerators"]
    assert (npu["vendor"], npu["name"], npu["uuid"], npu["power_limit_w"]) == ("acme", "ACME NPU 9000", "ACME-0001", 350.0)
    assert "warning" not in done.stderr
    tables = _wattbench("info", plugin=plugin)
    assert "Accelerators (other vendors)" in tables.stdout and "ACME NPU 9000" in tables.stdout

    without = _wattbench("info", "--json")
    assert without.returncode == 0 and json.loads(without.stdout)["accelerators"] == []
    assert "acme" not in (without.stdout + without.stderr).lower()


@pytest.mark.parametrize(
    ("api", "target", "why"),
    [
        (2, "acme_npu:AcmeNpu", "written for device API 2, this wattbench has 1"),
        (1, "acme_npu:Missing", "failed to load: AttributeError"),
        (1, "acme_npu:NPUS", "is not a bench.device.base.GpuVendor subclass"),
        (1, "no_such_module:AcmeNpu", "failed to load: ModuleNotFoundError"),
    ],
)
def test_a_plugin_that_cannot_be_used_is_one_warning_line_and_info_goes_on(
    tmp_path: Path, api: int, target: str, why: str
) -> None:
    done = _wattbench("info", "--json", plugin=_install(tmp_path / "site", api, target))
    assert done.returncode == 0, done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if "device plugin" in ln]
    assert line.startswith("wattbench: warning: device plugin 'acme'") and "skipped" in line and why in line
    assert json.loads(done.stdout)["accelerators"] == []


def test_a_plugin_cannot_replace_a_built_in_vendor(tmp_path: Path) -> None:
    plugin = _install(tmp_path / "site")
    entry = plugin / "wattbench_acme-1.0.dist-info" / "entry_points.txt"
    entry.write_text("[wattbench.devices]\nnvidia = acme_npu:AcmeNpu\n")
    done = _wattbench("info", "--json", plugin=plugin)
    assert "device plugin 'nvidia' (acme_npu:AcmeNpu) skipped: nvidia is built in" in done.stderr


def test_a_plugins_power_is_a_runs_energy_and_its_name_is_in_the_report(tmp_path: Path) -> None:
    """A device whose UUID only the plugin lists is measured through the plugin (loaded from its
    entry point, beside the simulated NVML that lists another GPU): its source names the run's
    energy, and the report shows it, with the plugin installed or not (the report reads files)."""
    plugin = _install(tmp_path / "site")
    out = tmp_path / "acme.json"
    driver = (
        "import sys; from dataclasses import replace; from pathlib import Path\n"
        "from tests.golden.deterministic import GPU, write_measured_by\n"
        "npu = replace(GPU, name='ACME NPU 9000', uuid='ACME-0001', power_limit_w=350.0)\n"
        "write_measured_by(Path(sys.argv[1]), npu, 'wattbench run (plugin)')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin), str(ROOT)]))
    done = subprocess.run(
        [sys.executable, "-c", driver, str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["run"]["monitor"]["status"] == {"cuda:0": "acme_power"}
    energies = [c["energy"] for c in doc["cases"] if c["status"] == "ok"]
    assert len(energies) == 3 and all(e["source"] == "acme_power" and e["avg_watts"] == 42.0 for e in energies)
    for installed in (plugin, None):
        report = _wattbench("report", str(out), "--format", "csv", plugin=installed)
        assert report.returncode == 0, report.stderr
        assert "ACME NPU 9000" in report.stdout and "acme_power" in report.stdout
