"""Whether this process may change an NVIDIA GPU's power limit and clocks, decided from its user
and capabilities alone, never by trying a change (`wattbench info` runs on shared GPU machines).

The small readers below (`effective_uid`, `effective_capabilities`, `in_user_namespace` and the
paths they read) are looked up through this module at each call: tests, and the test
subprocesses' sitecustomize, replace them here.
"""

from __future__ import annotations

import os

__all__ = [
    "ADMIN_NEEDED",
    "CAP_SYS_ADMIN",
    "effective_capabilities",
    "effective_uid",
    "in_user_namespace",
    "may_change_settings",
]

ADMIN_NEEDED = "run as root (sudo) or grant CAP_SYS_ADMIN"
CAP_SYS_ADMIN = 21  # bit in the capability sets of /proc/PID/status
PROC_SELF_STATUS = "/proc/self/status"


def effective_uid() -> int | None:
    """This process's effective user id; None where the OS has none (tests replace this)."""
    geteuid = getattr(os, "geteuid", None)
    return int(geteuid()) if geteuid is not None else None


def proc_status_path() -> str:
    """Where this process's capability sets are read (tests replace this)."""
    return PROC_SELF_STATUS


def effective_capabilities() -> int | None:
    """The CapEff bit mask from /proc/self/status; None where it cannot be read (not Linux)."""
    try:
        with open(proc_status_path(), encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return int(line.split(":", 1)[1].strip(), 16)
    except (OSError, ValueError):
        return None
    return None


def may_change_settings() -> tuple[bool, str]:
    """Whether this process may change power limits and clocks, and why.

    NVML's setters need CAP_SYS_ADMIN as the host sees it (the driver checks the capability, not
    the user id): bit 21 of CapEff in /proc/self/status, outside a user namespace. Root in a
    container without SYS_ADMIN, or in a rootless one, is refused by the driver, so here too.
    nvidia-smi's "-acp UNRESTRICTED" opens only the applications clocks to other users, not
    power limits or locked clocks; wattbench does not rely on it.
    """
    caps = effective_capabilities()
    if caps is None:  # no /proc/self/status (not Linux): only the user id can say
        return (True, "root") if effective_uid() == 0 else (False, f"not root and no CAP_SYS_ADMIN: {ADMIN_NEEDED}")
    if not caps >> CAP_SYS_ADMIN & 1:
        if effective_uid() == 0:  # e.g. root in a container started without --cap-add SYS_ADMIN
            return False, f"root, but without CAP_SYS_ADMIN (a container needs --cap-add SYS_ADMIN): {ADMIN_NEEDED}"
        return False, f"not root and no CAP_SYS_ADMIN: {ADMIN_NEEDED}"
    if in_user_namespace():
        return False, (
            f"CAP_SYS_ADMIN only inside a user namespace (a rootless container); the driver checks it on the host: {ADMIN_NEEDED}"
        )
    return True, "root" if effective_uid() == 0 else "CAP_SYS_ADMIN"


def uid_map_path() -> str:
    return "/proc/self/uid_map"


def in_user_namespace() -> bool:
    """True when this process's user ids are a slice of the host's (/proc/self/uid_map maps less
    than the whole range): its capabilities then hold in that namespace only."""
    try:
        with open(uid_map_path(), encoding="ascii") as f:
            fields = f.read().split()
    except OSError:
        return False
    return fields[:3] != ["0", "0", "4294967295"]
