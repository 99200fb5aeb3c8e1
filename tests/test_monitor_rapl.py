"""RAPL against a fake powercap tree in a temporary folder: zones, wrap-around, permission."""

import time
from pathlib import Path

import pytest

from bench.monitor.discover import DeviceRef, discover
from bench.monitor.rapl import RaplSource, RaplUnavailable, rapl_status


def _zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = 262143328850) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "name").write_text(label + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


@pytest.fixture
def tree(tmp_path):
    """Two sockets with dram, plus zones that must not be added (core, uncore, psys)."""
    root = tmp_path / "powercap"
    zones = {
        "pkg0": _zone(root, "intel-rapl:0", "package-0", 1_000_000),
        "dram0": _zone(root / "intel-rapl:0", "intel-rapl:0:0", "dram", 500_000),
        "core0": _zone(root / "intel-rapl:0", "intel-rapl:0:1", "core", 700_000),
        "pkg1": _zone(root, "intel-rapl:1", "package-1", 2_000_000),
        "psys": _zone(root, "intel-rapl:2", "psys", 9_000_000),
    }
    # The kernel also lists subzones at the top level as links; a plain copy stands in for them.
    _zone(root, "intel-rapl:0:0", "dram", 500_000)
    return root, zones


def _set(path: Path, uj: int) -> None:
    (path / "energy_uj").write_text(f"{uj}\n")


def test_package_and_dram_only(tree):
    root, zones = tree
    src = RaplSource(root, probe=False)
    assert src.zone_names == ["package-0", "package-0/dram", "package-1"]
    start = src.read().energy_j
    _set(zones["pkg0"], 1_000_000 + 3_000_000)  # +3 J
    _set(zones["dram0"], 500_000 + 1_000_000)  # +1 J
    _set(zones["pkg1"], 2_000_000 + 2_500_000)  # +2.5 J
    _set(zones["core0"], 99_000_000)  # inside package: never added
    _set(zones["psys"], 99_000_000)  # whole platform: never added
    assert src.read().energy_j - start == pytest.approx(6.5)


def test_wrap_around(tree):
    root, zones = tree
    max_uj = 262143328850
    (zones["pkg0"] / "max_energy_range_uj").write_text(f"{max_uj}\n")
    _set(zones["pkg0"], max_uj - 1_000_000)  # 1 J before the wrap
    src = RaplSource(root, probe=False)
    start = src.read().energy_j
    _set(zones["pkg0"], 2_000_000)  # wrapped: 1 J + 2 J later
    assert src.read().energy_j - start == pytest.approx(3.0)
    _set(zones["pkg0"], 2_500_000)
    assert src.read().energy_j - start == pytest.approx(3.5)


def test_permission_denied(tree, monkeypatch):
    root, zones = tree
    real = Path.read_text

    def guarded(self, *args, **kwargs):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", guarded)
    with pytest.raises(RaplUnavailable, match="permission denied"):
        RaplSource(root, probe=False)
    assert rapl_status(root).startswith("unavailable: permission denied")
    found = discover([DeviceRef("cpu", "cpu")], powercap_root=root)
    assert found.status["cpu"].startswith("unavailable: permission denied")
    assert discover([DeviceRef("cpu", "cpu")], 100.0, powercap_root=root).status["cpu"] == "nominal (estimate)"


def test_not_present(tmp_path):
    with pytest.raises(RaplUnavailable, match="not present"):
        RaplSource(tmp_path, probe=False)
    assert rapl_status(tmp_path / "missing") == "unavailable: not present (no /sys/class/powercap)"


def test_window_energy_from_rapl(tree):
    from bench.monitor.sampler import Monitor

    root, zones = tree
    src = RaplSource(root, probe=False)
    with Monitor([src], 0.01) as monitor:
        with monitor.window() as window:
            for i in range(1, 11):
                time.sleep(0.02)
                _set(zones["pkg0"], 1_000_000 + i * 2_000_000)  # 2 J every 20 ms: 100 W
    result = window.results["cpu"]
    assert result.source == "rapl"
    assert result.joules == pytest.approx(20.0)
    assert result.avg_watts == pytest.approx(20.0 / result.duration_s)
    assert result.peak_watts > 0


def test_concurrent_reads_never_count_a_false_wrap(tree, monkeypatch):
    """The window edge (caller's thread) and the sampler read one source at once: a stale value
    stored after a newer one would look like a wrap and add max_energy_range_uj (~262 kJ)."""
    import os
    import threading

    from bench.monitor import rapl

    root, zones = tree
    src = RaplSource(root, probe=False)
    start = src.read().energy_j
    real_read = rapl._Zone.read_uj

    def slow_read(self):  # widen the gap between reading the counter and storing it
        value = real_read(self)
        time.sleep(0.0002)
        return value

    monkeypatch.setattr(rapl._Zone, "read_uj", slow_read)
    stop = threading.Event()
    counter = {"uj": 1_000_000}

    def writer():
        tmp = zones["pkg0"] / "energy_uj.tmp"
        while not stop.is_set():
            counter["uj"] += 1_000
            tmp.write_text(f"{counter['uj']}\n")
            os.replace(tmp, zones["pkg0"] / "energy_uj")  # atomic: a reader never sees a half-written file
            time.sleep(0.0001)

    errors = []

    def reader():
        for _ in range(300):
            r = src.read()
            if r.error:
                errors.append(r.error)
            elif r.energy_j - start > 1e3:
                errors.append(f"false wrap: +{r.energy_j - start:.0f} J")

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    stop.set()
    threads[0].join()
    assert errors == []
    assert src.read().energy_j - start == pytest.approx((counter["uj"] - 1_000_000) * 1e-6)
