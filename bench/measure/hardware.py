"""What this machine is: the host, its CPU and its GPUs, and which device a run targets.

Discovery reads torch for what CUDA sees and NVML for what only the driver knows (driver version,
UUID, power limit). It never changes a device setting. Results carry these facts so a report can
put runs from different machines side by side.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.errors import UsageError
from bench.monitor import nvml
from bench.units import parse_bytes


@dataclass(frozen=True)
class DeviceInfo:
    """One device a case can run on. `cache_bytes` is the last cache before memory (LLC or GPU L2)."""

    id: str
    kind: str
    name: str
    memory_bytes: int | None
    cache_bytes: int | None = None
    cores: int | None = None
    multiprocessors: int | None = None
    compute_capability: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    power_limit_w: float | None = None

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.id)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k in ("memory_bytes",)}


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    os: str
    python: str
    torch: str
    cuda: str | None
    driver: str | None
    cpu_model: str
    cpu_count: int
    memory_bytes: int | None
    torch_threads: int
    nvml: str = field(default="")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


@functools.cache
def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what platform knows."""
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _cpu_llc_bytes(root: Path = Path("/sys/devices/system/cpu")) -> int | None:
    """Total last-level cache in bytes: the highest-level data cache, summed over its instances.

    A chiplet CPU has one L3 per CCD and a server one per socket; counting only cpu0's would
    under-report the cache by that factor (instances are told apart by their shared_cpu_list).
    """
    instances: dict[tuple[int, str], int] = {}
    for index in root.glob("cpu[0-9]*/cache/index[0-9]*"):
        level, size, kind = _read(index / "level"), _read(index / "size"), _read(index / "type")
        if not level or not size or kind == "Instruction":
            continue
        try:
            value = parse_bytes(size.replace("K", "KiB").replace("M", "MiB"))
        except ValueError:
            continue
        instances[(int(level), _read(index / "shared_cpu_list") or str(index))] = value
    if not instances:
        return None
    top = max(level for level, _ in instances)
    return sum(size for (level, _), size in instances.items() if level == top)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@functools.cache
def cpu_device() -> DeviceInfo:
    return DeviceInfo(
        id="cpu",
        kind="cpu",
        name=cpu_model(),
        memory_bytes=_memory_bytes(),
        cache_bytes=_cpu_llc_bytes(),
        cores=_usable_cpus(),
    )


@functools.cache
def nvml_inventory() -> nvml.NvmlInventory | str:
    """NVML's view of the GPUs, or the reason NVML cannot be used here."""
    try:
        return nvml.inventory()
    except nvml.NvmlError as exc:
        return str(exc)


def cuda_available() -> bool:
    return torch.cuda.is_available()


@functools.cache
def cuda_devices() -> tuple[DeviceInfo, ...]:
    """Every GPU torch can use, in CUDA order, with NVML's identity where NVML works."""
    if not cuda_available():
        return ()
    inventory = nvml_inventory()
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        uuid = str(props.uuid) if getattr(props, "uuid", None) is not None else None
        gpu = inventory.by_uuid(uuid) if isinstance(inventory, nvml.NvmlInventory) else None
        devices.append(
            DeviceInfo(
                id=f"cuda:{index}",
                kind="cuda",
                name=props.name,
                memory_bytes=int(props.total_memory),
                cache_bytes=int(getattr(props, "L2_cache_size", 0)) or None,
                multiprocessors=int(props.multi_processor_count),
                compute_capability=f"{props.major}.{props.minor}",
                uuid=gpu.uuid if gpu else (f"GPU-{uuid}" if uuid else None),
                pci_bus_id=gpu.pci_bus_id if gpu else None,
                power_limit_w=gpu.power_limit_w if gpu else None,
            )
        )
    return tuple(devices)


def host_info() -> HostInfo:
    inventory = nvml_inventory()
    if isinstance(inventory, nvml.NvmlInventory):
        nvml_status = f"ok ({len(inventory.gpus)} GPU(s))"
        driver = inventory.driver_version
    else:
        nvml_status = f"unavailable: {inventory}"
        driver = None
    return HostInfo(
        hostname=socket.gethostname(),
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        driver=driver,
        cpu_model=cpu_model(),
        cpu_count=os.cpu_count() or 1,
        memory_bytes=_memory_bytes(),
        torch_threads=torch.get_num_threads(),
        nvml=nvml_status,
    )


def all_devices() -> tuple[DeviceInfo, ...]:
    return (*cuda_devices(), cpu_device())


def resolve_devices(spec: str | None) -> list[DeviceInfo]:
    """Turn a --device value into devices: cpu, cuda (all GPUs), cuda:N, all; None = best present.

    The best device is the first GPU when there is one, else the CPU.
    """
    gpus = cuda_devices()
    if spec is None:
        return [gpus[0]] if gpus else [cpu_device()]
    spec = spec.strip().lower()
    if spec == "cpu":
        return [cpu_device()]
    if spec == "all":
        return list(all_devices())
    if spec == "cuda" or spec.startswith("cuda:"):
        if not gpus:
            raise UsageError(
                f"--device {spec}: no CUDA GPU is visible (torch {torch.__version__}, "
                f"CUDA build: {torch.version.cuda or 'no'}); valid here: cpu, all"
            )
        if spec == "cuda":
            return list(gpus)
        index = spec.partition(":")[2]
        if not index.isdigit() or int(index) >= len(gpus):
            valid = ", ".join(g.id for g in gpus)
            raise UsageError(f"--device {spec}: no such GPU; valid: cpu, cuda, all, {valid}")
        return [gpus[int(index)]]
    raise UsageError(f"--device {spec!r} is not a device; valid: cpu, cuda, cuda:N, all")
