"""What this machine is: the host, its CPU and its GPUs, and which device a run targets.

Discovery reads torch for what CUDA sees and NVML for what only the driver knows (driver version,
UUID, power limit). It never changes a device setting. Results carry these facts so a report can
put runs from different machines side by side. `gpu_diagnosis` says, for a GPU the driver has
but this torch cannot use, why and what to do; `no_power_hint` says how to measure an unmeasured device.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.device import amd, nvidia
from bench.device.base import DeviceError, GpuInfo, Inventory
from bench.errors import UsageError
from bench.measure import rocm
from bench.monitor.discover import DeviceRef
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
    mig: bool | None = None  # True for a MIG instance or an AMD GPU partition: its power is not measurable alone
    mig_parent_uuid: str | None = None  # the physical GPU of a MIG instance or partition, where the vendor lists it
    arch: str | None = None  # an AMD GPU's architecture ("gfx942"); None on NVIDIA (compute_capability says)
    serial: str | None = None  # the board's serial, module id (baseboard slot) and firmware, from the vendor
    module_id: int | None = None
    vbios: str | None = None

    @property
    def rocm(self) -> bool:
        """True for an AMD GPU under a ROCm build of torch (torch calls it a "cuda" device)."""
        return self.kind == "cuda" and bool(self.arch) and str(self.arch).startswith("gfx")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.id)

    def ref(self) -> DeviceRef:
        """What power-source discovery needs of this device."""
        return DeviceRef(self.id, self.kind, self.uuid, self.mig_parent_uuid if self.mig else None)

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
def nvml_inventory() -> Inventory | str:
    """NVML's view of the GPUs, or the reason NVML cannot be used here."""
    try:
        return nvidia.inventory()
    except DeviceError as exc:
        return str(exc)


def cuda_available() -> bool:
    return torch.cuda.is_available()


@functools.cache
def amd_inventory() -> Inventory | str:
    """AMD SMI's view of the GPUs, or the reason it cannot be used here."""
    try:
        return amd.AmdGpus().inventory()
    except DeviceError as exc:
        return str(exc)


@functools.cache
def cuda_devices() -> tuple[DeviceInfo, ...]:
    """Every GPU torch can use, in CUDA order, with NVML's identity where NVML works (a ROCm build
    of torch: AMD SMI's, `rocm_device_info`)."""
    if not cuda_available():
        return ()
    if getattr(torch.version, "hip", None):
        amd_gpus = amd_inventory()
        return tuple(
            rocm_device_info(index, torch.cuda.get_device_properties(index), amd_gpus)
            for index in range(torch.cuda.device_count())
        )
    inventory = nvml_inventory()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return tuple(
        cuda_device_info(index, torch.cuda.get_device_properties(index), inventory, visible)
        for index in range(torch.cuda.device_count())
    )


def _torch_fields(index: int, props: Any) -> dict[str, Any]:
    """What torch.cuda.get_device_properties says of GPU `index`, as DeviceInfo fields."""
    return {
        "id": f"cuda:{index}",
        "kind": "cuda",
        "name": props.name,
        "memory_bytes": int(props.total_memory),
        "cache_bytes": int(getattr(props, "L2_cache_size", 0)) or None,
        "multiprocessors": int(props.multi_processor_count),
        "compute_capability": f"{props.major}.{props.minor}",
    }


def rocm_device_info(index: int, props: Any, inventory: Inventory | str, in_order: GpuInfo | None = None) -> DeviceInfo:
    """One AMD GPU as a ROCm build of torch describes it (`props`), with AMD SMI's identity, matched
    by PCI address or UUID (bench.measure.rocm), else `in_order` (AMD SMI's GPU at this index,
    where the caller knows the orders agree). A device on a partitioned GPU is a partition: no
    UUID of its own that AMD SMI could be asked about, `mig` True, its GPU in `mig_parent_uuid`,
    "(partition)" after its name (its peak is not the board's)."""
    gpu = (rocm.find_gpu(props, inventory) if isinstance(inventory, Inventory) else None) or in_order
    partition = bool(gpu is not None and gpu.mig_mode)
    raw = str(getattr(props, "uuid", "") or "") or None
    if gpu is not None and not partition:
        uuid: str | None = gpu.uuid
    elif gpu is None and raw:
        uuid = raw if raw.lower().startswith("gpu-") else f"GPU-{raw}"
    else:
        uuid = None
    fields = _torch_fields(index, props)
    if partition:
        fields["name"] = f"{fields['name']} (partition)"
    return DeviceInfo(
        **fields,
        uuid=uuid,
        pci_bus_id=gpu.pci_bus_id if gpu else None,
        power_limit_w=gpu.power_limit_w if gpu and not partition else None,
        mig=True if partition else None,
        mig_parent_uuid=gpu.uuid if gpu and partition else None,
        arch=str(getattr(props, "gcnArchName", "") or "").split(":")[0] or None,
        **_identity(gpu),
    )


def _mig_name(name: str) -> bool:
    """CUDA names a MIG instance after its GPU and profile: 'NVIDIA A100-SXM4-40GB MIG 1g.5gb'."""
    return " MIG " in f" {name} "


def cuda_device_info(index: int, props: Any, inventory: Inventory | str, visible: str | None) -> DeviceInfo:
    """One GPU as torch describes it (`props`: torch.cuda.get_device_properties), with NVML's identity.

    Under MIG, torch's device is an instance: its UUID is the instance's (NVML writes it 'MIG-...'),
    NVML's inventory lists the physical GPUs, and the instance's power cannot be measured. It is
    recognised by NVML listing it on a GPU in MIG mode, by its name ('... MIG 1g.10gb'), or by
    CUDA_VISIBLE_DEVICES naming MIG instances; it keeps the 'MIG-' prefix and `mig` is True.
    """
    raw = str(props.uuid) if getattr(props, "uuid", None) is not None else None
    uuid = raw.removeprefix("GPU-").removeprefix("MIG-") if raw else None
    gpu = parent = None
    if isinstance(inventory, Inventory):
        gpu = inventory.by_uuid(uuid)
        parent = inventory.mig_parent(uuid) if gpu is None else None
    mig = gpu is None and (
        parent is not None
        or _mig_name(str(props.name))
        or nvidia.is_mig_uuid(raw)
        or nvidia.is_mig_uuid((visible or "").split(",")[0].strip())
    )
    full_uuid = f"{'MIG' if mig else 'GPU'}-{uuid}" if uuid else None
    if gpu is not None:
        full_uuid = gpu.uuid
    elif parent is not None:  # NVML's own spelling of the instance's UUID
        full_uuid = next((m for m in parent.mig_uuids if m.lower() == f"mig-{uuid}".lower()), full_uuid)
    return DeviceInfo(
        **_torch_fields(index, props),
        uuid=full_uuid,
        pci_bus_id=gpu.pci_bus_id if gpu else (parent.pci_bus_id if parent else None),
        power_limit_w=gpu.power_limit_w if gpu else None,  # a MIG instance has no limit of its own
        mig=True if mig else None,
        mig_parent_uuid=parent.uuid if parent else None,
        **_identity(gpu or parent),
    )


def _identity(gpu: GpuInfo | None) -> dict[str, Any]:
    """The board's serial, module id and firmware, where the vendor gave them."""
    if gpu is None:
        return {}
    return {"serial": gpu.serial, "module_id": gpu.module_id, "vbios": gpu.vbios}


def host_info() -> HostInfo:
    inventory = nvml_inventory()
    if isinstance(inventory, Inventory):
        nvml_status = f"ok ({len(inventory.gpus)} GPU(s))"
        driver = inventory.driver_version
    else:
        nvml_status = f"unavailable: {inventory}"
        driver = None
        if getattr(torch.version, "hip", None):  # a ROCm machine: the amdgpu driver's version
            amd_gpus = amd_inventory()
            driver = f"amdgpu {amd_gpus.driver_version}" if isinstance(amd_gpus, Inventory) else None
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


# --- diagnosis: GPUs NVML sees that this torch cannot use, devices nothing can measure ----------

MIG_POWER_FIX = "pass --nominal-watts W for an estimate, or run on a whole GPU (MIG disabled) to measure power"
PYTORCH_WHEEL_INDEX = "https://download.pytorch.org/whl"
PYTORCH_INSTALL_PAGE = "https://pytorch.org/get-started/locally/"


@dataclass(frozen=True)
class TorchCuda:
    """What this torch knows of CUDA: the inputs of `gpu_diagnosis`, apart so tests can pass them.

    `error` is the first line of the error torch gives when CUDA cannot start (a CUDA build with
    is_available() False): torch's own message often names the cause (driver too old, no device).
    """

    version: str
    cuda: str | None
    hip: str | None
    available: bool
    devices: tuple[DeviceInfo, ...]
    error: str | None = None

    @classmethod
    def live(cls) -> TorchCuda:
        available = cuda_available()
        error = None
        if torch.version.cuda and not available:
            error = _cuda_init_error()
        return cls(
            version=torch.__version__,
            cuda=torch.version.cuda,
            hip=getattr(torch.version, "hip", None),
            available=available,
            devices=cuda_devices(),
            error=error,
        )


def _cuda_init_error() -> str | None:
    """Why CUDA does not start in this torch, in torch's words (first line), or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.cuda.init()
    except (RuntimeError, AssertionError) as exc:  # what torch raises, with the CUDA reason
        text = str(exc).strip().splitlines()
        return text[0] if text else type(exc).__name__
    return None


@dataclass(frozen=True)
class GpuDiagnosis:
    """One GPU: what NVML and torch know of it, whether this torch can run on it, and if not
    (or if its power cannot be measured) what is wrong and what to do.

    `nvml_index` is None for a GPU torch uses but NVML does not list (NVML unavailable);
    `torch_device` ("cuda:N") is None for a GPU this torch cannot use.
    """

    nvml_index: int | None
    uuid: str | None
    name: str
    memory_bytes: int | None
    power_limit_w: float | None
    torch_device: str | None
    problem: str | None = None
    fix: str | None = None

    @property
    def usable(self) -> bool:
        return self.torch_device is not None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "usable_by_torch": self.usable}


def _version_tuple(text: str | None) -> tuple[int, ...] | None:
    """'12.6' -> (12, 6); None when the text is not a dotted version."""
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.split(".")[:2])
    except ValueError:
        return None


def _wheel_advice(driver_cuda: str | None) -> str:
    """How to install a CUDA build of torch that this driver can run (CUDA at most the driver's)."""
    driver = _version_tuple(driver_cuda)
    if driver is None or len(driver) < 2:
        return (
            f"install a CUDA build of torch for a CUDA version the driver supports ('CUDA Version' in nvidia-smi), "
            f"from {PYTORCH_INSTALL_PAGE}"
        )
    tag = f"cu{driver[0]}{driver[1]}"
    return (
        f"pip uninstall -y torch && pip install torch --index-url {PYTORCH_WHEEL_INDEX}/{tag} "
        f"(the driver supports CUDA {driver_cuda}: use the highest cuXYZ at most {driver_cuda} that "
        f"{PYTORCH_INSTALL_PAGE} offers for your torch version)"
    )


def _visible_devices_hide_all(value: str, gpus: Sequence[GpuInfo]) -> bool:
    """True when CUDA_VISIBLE_DEVICES=value selects none of `gpus`.

    CUDA reads the comma-separated entries (an index, or a UUID or a prefix of one, 'GPU-' or
    'MIG-' included) in order and stops at the first that names no device, so the first entry
    decides: '', '-1' or a wrong UUID there hides every GPU.
    """
    first = value.split(",")[0].strip().lower()
    if first.isdigit():
        return int(first) >= len(gpus)
    if first.startswith("mig-"):
        return False  # a MIG instance: NVML's GPU list cannot tell, assume it names one
    wanted = first.removeprefix("gpu-")
    return not wanted or not any(g.uuid.lower().removeprefix("gpu-").startswith(wanted) for g in gpus)


def _not_usable(
    gpu: GpuInfo,
    inventory: Inventory,
    torch_cuda: TorchCuda,
    visible: str | None,
) -> tuple[str, str]:
    """(problem, fix) for a GPU NVML sees and this torch cannot use; the first cause that applies."""
    driver_cuda = inventory.cuda_driver_version
    driver = f"driver {inventory.driver_version}" + (f", CUDA {driver_cuda}" if driver_cuda else "")
    if torch_cuda.cuda is None:
        if torch_cuda.hip:
            build = f"torch {torch_cuda.version} is a ROCm (HIP {torch_cuda.hip}) build: it cannot use NVIDIA GPUs"
        else:
            build = f"torch {torch_cuda.version} is a CPU-only build (torch.version.cuda is None)"
        return build, "replace it with a CUDA build: " + _wheel_advice(driver_cuda)
    if torch_cuda.devices:
        seen = ", ".join(d.id for d in torch_cuda.devices)
        if visible is not None:
            return (
                f"hidden by CUDA_VISIBLE_DEVICES={visible!r} (torch uses {seen})",
                f"add this GPU's index or UUID ({gpu.uuid}) to CUDA_VISIBLE_DEVICES, or unset it",
            )
        return (
            f"not visible to this process (torch uses {seen}; CUDA_VISIBLE_DEVICES is not set)",
            (
                "a container or job scheduler limits the GPUs this process may open: "
                "ask it for this GPU (docker --gpus, the job's GPU count)"
            ),
        )
    if visible is not None and _visible_devices_hide_all(visible, inventory.gpus):
        return (
            f"hidden by CUDA_VISIBLE_DEVICES={visible!r}, which names none of the {len(inventory.gpus)} GPU(s)",
            f"unset CUDA_VISIBLE_DEVICES or set it to GPU indices (0,1,...) or UUIDs ({gpu.uuid})",
        )
    # CUDA's minor-version compatibility lets a torch built for 12.8 run on a driver for 12.4: only
    # an older major version is the cause. Within one major version torch's own error says more.
    torch_version, driver_version = _version_tuple(torch_cuda.cuda), _version_tuple(driver_cuda)
    if torch_version and driver_version and driver_version[0] < torch_version[0]:
        problem = (
            f"the NVIDIA driver is too old for this torch: torch {torch_cuda.version} is built for CUDA "
            f"{torch_cuda.cuda}, the driver ({inventory.driver_version}) supports at most CUDA {driver_cuda}"
        )
        fix = (
            f"upgrade the NVIDIA driver to one that supports CUDA {torch_cuda.cuda} or newer, or install a torch "
            f"built for CUDA {driver_cuda} or older: {_wheel_advice(driver_cuda)}"
        )
        return problem, fix
    cause = torch_cuda.error or "torch.cuda.is_available() is False"
    return (
        f"CUDA does not start in torch {torch_cuda.version} (CUDA {torch_cuda.cuda}; {driver}): {cause}",
        (
            "check that nvidia-smi works for this user, that the process may open /dev/nvidia* "
            "(in a container: --gpus all and the NVIDIA Container Toolkit), and the full error of "
            "python -c 'import torch; torch.cuda.init()'"
        ),
    )


def gpu_diagnosis(
    inventory: Inventory | str | None = None,
    torch_cuda: TorchCuda | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[GpuDiagnosis]:
    """Every GPU NVML sees, and every GPU torch uses that NVML does not list, with what is wrong.

    A GPU NVML sees (on every driver machine) but this torch cannot use is the most common set-up
    mistake: a CPU build of torch, a torch built for a newer CUDA than the driver, or GPUs hidden by
    CUDA_VISIBLE_DEVICES. Each such GPU gets the cause and the fix. A GPU torch uses while NVML is
    unavailable runs, but its power cannot be measured: it gets NVML's reason.

    The inputs default to this machine (NVML, this torch, os.environ); tests pass their own.
    """
    inventory = nvml_inventory() if inventory is None else inventory
    torch_cuda = TorchCuda.live() if torch_cuda is None else torch_cuda
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if not isinstance(inventory, Inventory):
        return [
            _torch_only(
                d,
                f"power and energy cannot be measured: NVML is unavailable ({inventory})",
                "make NVML work (nvidia-ml-py installed, the NVIDIA driver's libnvidia-ml.so loadable), "
                "or pass --nominal-watts W for an estimate",
            )
            for d in torch_cuda.devices
            if not d.rocm  # AMD GPUs are AMD SMI's (bench.measure.rocm says what is wrong there)
        ]
    used: dict[int, str] = {}
    instances: dict[int, list[str]] = {}  # GPU index -> the torch devices that are its MIG instances
    unlisted: list[DeviceInfo] = []
    for d in torch_cuda.devices:
        if d.rocm:  # an AMD GPU: not NVML's to describe
            continue
        gpu = inventory.by_uuid(d.uuid)
        parent = (inventory.mig_parent(d.uuid) or inventory.by_uuid(d.mig_parent_uuid)) if gpu is None else None
        if parent is not None:
            instances.setdefault(parent.index, []).append(d.id)
            used[parent.index] = ", ".join(instances[parent.index])
        elif gpu is None:
            unlisted.append(d)
        else:
            used[gpu.index] = d.id
    out: list[GpuDiagnosis] = []
    for gpu in inventory.gpus:
        problem = fix = None
        if gpu.index in instances:
            problem = (
                f"in MIG mode, used through its instance(s) {', '.join(instances[gpu.index])}: "
                "NVML reports power per physical GPU, not per instance, so their power cannot be measured"
            )
            fix = MIG_POWER_FIX
        elif gpu.index not in used:
            problem, fix = _not_usable(gpu, inventory, torch_cuda, visible)
        out.append(
            GpuDiagnosis(
                nvml_index=gpu.index,
                uuid=gpu.uuid,
                name=gpu.name,
                memory_bytes=gpu.memory_bytes,
                power_limit_w=gpu.power_limit_w,
                torch_device=used.get(gpu.index),
                problem=problem,
                fix=fix,
            )
        )
    for d in unlisted:
        if d.mig or nvidia.is_mig_uuid(d.uuid):
            out.append(_torch_only(d, f"{nvidia.MIG_POWER_REASON}: its power cannot be measured", MIG_POWER_FIX))
        else:
            out.append(
                _torch_only(
                    d,
                    "NVML lists no GPU with this UUID (a MIG instance?): its power cannot be measured per device",
                    "pass --nominal-watts W for an estimate",
                )
            )
    return out


def _torch_only(device: DeviceInfo, problem: str, fix: str) -> GpuDiagnosis:
    """A GPU torch uses but NVML does not describe: usable, with what that costs and the way out."""
    return GpuDiagnosis(
        nvml_index=None,
        uuid=device.uuid,
        name=device.name,
        memory_bytes=device.memory_bytes,
        power_limit_w=device.power_limit_w,
        torch_device=device.id,
        problem=problem,
        fix=fix,
    )


def no_power_hint(devices: Sequence[DeviceInfo], status: Mapping[str, str]) -> str | None:
    """One line for the devices that no power source measures, and how to get one; None if all have one.

    `status` is discovery's per-device status ("unavailable: reason" when there is no source).
    The advice follows the reason: RAPL readable by root only (since Linux 5.10) -> run as root or
    make energy_uj readable; anything else -> an estimate with --nominal-watts.
    """
    missing = [(d, status[d.id].removeprefix("unavailable: ")) for d in devices if status.get(d.id, "").startswith("unavailable")]
    if not missing:
        return None
    parts = [f"{d.id} ({'RAPL' if d.kind == 'cpu' else 'AMD SMI' if d.rocm else 'NVML'}: {reason})" for d, reason in missing]
    fixes = []
    if any(d.kind == "cpu" and "permission denied" in reason for d, reason in missing):
        fixes.append(
            "run as root to read RAPL (or make it readable: sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj, "
            "or a udev rule to keep it across boots)"
        )
    fixes.append("pass --nominal-watts W for an estimate")
    return f"no power source for {', '.join(parts)}: energy is not measured; {' or '.join(fixes)}"
