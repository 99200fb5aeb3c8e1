"""ROCm builds of torch on AMD GPUs: which AMD SMI GPU each torch device is, and what is wrong with
an AMD set-up.

A ROCm build of torch presents AMD GPUs as `cuda` devices (torch.version.hip set). Their order is
HIP's, after ROCR_VISIBLE_DEVICES (applied first, by the ROCr runtime) and then
HIP_VISIBLE_DEVICES or CUDA_VISIBLE_DEVICES (indices into what ROCr left): not AMD SMI's order. So
a torch device is matched to AMD SMI's GPU by its PCI address (torch's pci_domain_id, pci_bus_id
and pci_device_id), else by UUID, never by index. torch has no PCI function, which is what tells
the partitions of one MI300X apart: a device on a partitioned GPU is known as a partition of that
GPU (`mig`, `mig_parent_uuid`), without a power source of its own, as a MIG instance is.

`setup_problems` is what `wattbench info` says about an AMD machine (ROCm's driver lists a GPU):
AMD SMI missing or without ROCm's library, no access to /dev/kfd or /dev/dri (the render and video
groups), a CPU-only or CUDA build of torch, GPUs hidden by the visibility variables.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.device.amd.gpus import physical_bus_id
from bench.device.base import GpuInfo, Inventory

__all__ = [
    "PYTORCH_ROCM_INDEX",
    "VISIBILITY_VARIABLES",
    "SetupProblem",
    "find_gpu",
    "setup_problems",
    "torch_bus_id",
    "visibility",
]

# In the order the ROCm stack applies them (torch.cuda._parse_visible_devices agrees).
VISIBILITY_VARIABLES = ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
PYTORCH_ROCM_INDEX = "https://download.pytorch.org/whl/rocm"
GROUPS_FIX = (
    "add the user to the render and video groups (sudo usermod -aG render,video $USER) and log in again; "
    "in a container: --device=/dev/kfd --device=/dev/dri --group-add render --group-add video"
)


@dataclass(frozen=True)
class SetupProblem:
    """One thing wrong with this machine's set-up for a vendor, and what to do."""

    vendor: str
    problem: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return {"vendor": self.vendor, "problem": self.problem, "fix": self.fix}


def torch_bus_id(props: Any) -> str | None:
    """A torch device's PCI address as AMD SMI writes it without the function ("0000:c1:00"),
    from torch's pci_domain_id, pci_bus_id and pci_device_id; None where torch lacks them."""
    parts = [getattr(props, name, None) for name in ("pci_domain_id", "pci_bus_id", "pci_device_id")]
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
        return None
    domain, bus, device = parts
    return f"{domain:04x}:{bus:02x}:{device:02x}"


def find_gpu(props: Any, inventory: Inventory) -> GpuInfo | None:
    """AMD SMI's physical GPU behind a torch device: by PCI address, else by UUID (torch's, with or
    without 'GPU-'; a partition's UUID finds its GPU)."""
    bus = torch_bus_id(props)
    if bus is not None:
        for gpu in inventory.gpus:
            if physical_bus_id(gpu.pci_bus_id) == bus:
                return gpu
    uuid = str(getattr(props, "uuid", "") or "")
    return inventory.by_uuid(uuid) or inventory.mig_parent(uuid)


def visibility(environ: Mapping[str, str]) -> str | None:
    """The visibility variables set, as 'NAME=value' joined by spaces; None where none is."""
    set_ = [f"{name}={environ[name]!r}" for name in VISIBILITY_VARIABLES if name in environ]
    return " ".join(set_) if set_ else None


def _rocm_version(root: Path) -> str | None:
    """The installed ROCm's version ("6.4.1"), from /opt/rocm/.info/version; None where absent."""
    try:
        text = (root / "opt/rocm/.info/version").read_text().strip()
    except OSError:
        return None
    return text.split("-")[0] or None


def _torch_build(torch_version: str, cuda: str | None, hip: str | None, root: Path) -> SetupProblem:
    rocm = _rocm_version(root)
    tag = ".".join(rocm.split(".")[:2]) if rocm else "X.Y"
    build = f"a CUDA (CUDA {cuda}) build" if cuda else "a CPU-only build"
    return SetupProblem(
        "amd",
        f"torch {torch_version} is {build} (torch.version.hip is None): it cannot use AMD GPUs",
        f"pip uninstall -y torch && pip install torch --index-url {PYTORCH_ROCM_INDEX}{tag} "
        f"(a ROCm version at most the installed ROCm's{f', {rocm}' if rocm else ''}; see https://pytorch.org/get-started/locally/)",
    )


def _device_access(root: Path, access: Callable[[Path, int], bool]) -> list[SetupProblem]:
    """/dev/kfd and the /dev/dri render nodes must be readable and writable by this user."""
    problems = []
    kfd = root / "dev/kfd"
    if kfd.exists() and not access(kfd, os.R_OK | os.W_OK):
        problems.append(SetupProblem("amd", f"no access to {kfd} (ROCm's compute device)", GROUPS_FIX))
    render = sorted((root / "dev/dri").glob("renderD*"))
    if render and not any(access(node, os.R_OK | os.W_OK) for node in render):
        problems.append(SetupProblem("amd", f"no access to the render nodes in {root / 'dev/dri'}", GROUPS_FIX))
    return problems


def setup_problems(
    inventory: Inventory | str,
    torch_version: str,
    cuda: str | None,
    hip: str | None,
    torch_devices: Sequence[Any],
    environ: Mapping[str, str],
    root: Path = Path("/"),
    access: Callable[[Path, int], bool] = os.access,
    nvidia_too: bool = False,
) -> list[SetupProblem]:
    """What stands between this AMD machine and a measured run, first cause first; [] when nothing
    does. `inventory` is AMD SMI's, or why it cannot be read; `torch_devices` are the torch
    devices (DeviceInfo) this torch uses. Called where ROCm's driver lists an AMD GPU; `root` and
    `access` (os.access) are a test's stand-ins for / and the permission check. `nvidia_too`: the
    machine has NVIDIA GPUs as well, where a CUDA build of torch is no mistake."""
    problems: list[SetupProblem] = []
    if isinstance(inventory, str):
        problems.append(
            SetupProblem(
                "amd",
                f"power and energy cannot be measured: AMD SMI cannot be used ({inventory})",
                "install ROCm's amd-smi-lib and the amdsmi Python package that comes with it "
                "(pip install /opt/rocm/share/amd_smi), or pass --nominal-watts W for an estimate",
            )
        )
    problems.extend(_device_access(root, access))
    if not hip:  # this torch cannot use AMD GPUs: say so, unless it is meant for the NVIDIA ones here
        build = None if (nvidia_too and cuda) else _torch_build(torch_version, cuda, hip, root)
        return [*problems, build] if build is not None else problems
    if isinstance(inventory, Inventory):
        used = {str(getattr(d, "mig_parent_uuid", None) or getattr(d, "uuid", None) or "").lower() for d in torch_devices}
        missing = [g for g in inventory.gpus if g.uuid.lower() not in used]
        if missing:
            names = ", ".join(f"{g.index} ({g.pci_bus_id or g.uuid})" for g in missing)
            seen = ", ".join(getattr(d, "id", "?") for d in torch_devices) or "none"
            hidden = visibility(environ)
            if hidden:
                problem = f"AMD GPU(s) {names} not used by torch (it uses {seen}): hidden by {hidden}"
                fix = "unset the variable(s) or list the GPUs wanted (indices, or UUIDs in ROCR_VISIBLE_DEVICES)"
            else:
                problem = f"AMD GPU(s) {names} not visible to torch (it uses {seen}; no visibility variable is set)"
                fix = "a container or job scheduler limits the GPUs this process may open: ask it for them; " + GROUPS_FIX
            problems.append(SetupProblem("amd", problem, fix))
    return problems
