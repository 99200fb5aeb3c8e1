"""Where this rank sits in a torchrun job and the process groups that connect it to the others.

torchrun (or `wattbench launch`, which only wraps it) starts one process per rank and sets RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE, MASTER_ADDR and
MASTER_PORT; `RankInfo.from_env` reads them. `ProcessGroups` joins the job: the default group
(nccl on CUDA, gloo on the CPU) is the workloads' (the collective workload moves its data there);
a second, gloo, group carries the harness's own agreements (bench.measure.lockstep), so control
messages never queue behind a GPU collective. Both get the process-group timeout
(`--pg-timeout`). The rendezvous store torch.distributed runs for the groups is shared too: the
heartbeats, the failure record (bench.measure.heartbeat) and the shards (bench.measure.shards)
live there under `KEY`, so they work across nodes and when no collective does.

The gloo helpers turn the usual multi-node failure (a host name that resolves to loopback) into
one line naming the cause.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch.distributed as dist

from bench.errors import UsageError

DEFAULT_PG_TIMEOUT_S = 300.0
KEY = "wattbench/"  # prefix of this job's keys in the rendezvous store
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
GLOO_IFNAME = "GLOO_SOCKET_IFNAME"
_GLOO_CONNECT = ("connectFullMesh", "Connection refused", "Connection reset", "Connection timed out")


@dataclass(frozen=True)
class RankInfo:
    """Where this process sits in a torchrun job (from torchrun's environment)."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    node_rank: int
    nodes: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RankInfo | None:
        """This rank under torchrun, or None for a plain process (any of TORCHRUN_ENV unset)."""
        env = os.environ if environ is None else environ
        if not all(env.get(k) for k in TORCHRUN_ENV):
            return None
        try:
            world = int(env["WORLD_SIZE"])
            return cls(
                rank=int(env["RANK"]),
                local_rank=int(env["LOCAL_RANK"]),
                world_size=world,
                local_world_size=int(env.get("LOCAL_WORLD_SIZE") or world),
                node_rank=int(env.get("GROUP_RANK") or 0),
                nodes=int(env.get("GROUP_WORLD_SIZE") or 1),
            )
        except ValueError:
            raise UsageError("torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK must be integers") from None


def backend_for(device_kind: str) -> str:
    """The default group's backend for a rank measuring a device of this kind."""
    return "nccl" if device_kind == "cuda" else "gloo"


def hostname_address(name: str | None = None) -> tuple[str, str | None]:
    """(this host's name, the address it resolves to, or None when it does not resolve). gloo
    tells its peers to connect to that address unless GLOO_SOCKET_IFNAME names an interface."""
    name = name or socket.gethostname()
    try:
        return name, socket.gethostbyname(name)
    except OSError:
        return name, None


def _is_loopback(address: str | None) -> bool:
    return address is not None and (address.startswith("127.") or address == "::1")


def loopback_warning(info: RankInfo, environ: Mapping[str, str] | None = None) -> str | None:
    """Before a job of several nodes: where this host's name resolves to loopback and
    GLOO_SOCKET_IFNAME is unset, gloo will give the other nodes an address they cannot reach."""
    env = os.environ if environ is None else environ
    if info.nodes < 2 or env.get(GLOO_IFNAME):
        return None
    name, address = hostname_address()
    if not _is_loopback(address):
        return None
    return (
        f"this host's name {name} resolves to {address} (loopback): gloo's other nodes will fail to connect; "
        f"set {GLOO_IFNAME} to the interface the nodes reach each other on (e.g. {GLOO_IFNAME}=eth0)"
    )


def gloo_connect_error(exc: BaseException, environ: Mapping[str, str] | None = None) -> str | None:
    """One line for a process group whose ranks could not connect (gloo's "connectFullMesh ...
    Connection refused"), naming the usual cause: the host name resolving to a loopback address
    (containers, host networking, Debian's default /etc/hosts), so that gloo advertises 127.x to
    the other nodes. NCCL may still work there: it picks its interface itself. None for any other
    error."""
    text = str(exc)
    if not any(marker in text for marker in _GLOO_CONNECT):
        return None
    env = os.environ if environ is None else environ
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    name, address = hostname_address()
    if env.get(GLOO_IFNAME):
        cause = f"{GLOO_IFNAME}={env[GLOO_IFNAME]} is set: check that the nodes reach each other on that interface"
    elif _is_loopback(address):
        cause = (
            f"this host's name {name} resolves to {address}, a loopback address, which gloo gave the other ranks; "
            f"set {GLOO_IFNAME} to the interface the nodes reach each other on (e.g. {GLOO_IFNAME}=eth0; "
            "`ip -br addr` lists them) or map the name to a routable address in /etc/hosts"
        )
    else:
        cause = (
            f"this host's name {name} resolves to {address or 'nothing'}; if the nodes cannot reach that address, "
            f"set {GLOO_IFNAME} to the interface they share"
        )
    return f"the ranks' gloo group could not connect ({first[:160]}): {cause}"


class ProcessGroups:
    """This rank's membership of the job's process groups: the default group, the harness's
    gloo control group and the rendezvous store behind them (see the module docstring)."""

    def __init__(self, info: RankInfo, backend: str, timeout_s: float = DEFAULT_PG_TIMEOUT_S) -> None:
        self.info = info
        self.backend = backend
        self.timeout_s = timeout_s
        self.control: dist.ProcessGroup | None = None  # the harness's gloo group, once joined
        self._store: dist.Store | None = None

    @property
    def store(self) -> dist.Store:
        """The rendezvous store (a RuntimeError before `join`)."""
        if self._store is None:
            raise RuntimeError("the job has not joined its process groups yet")
        return self._store

    def join(self) -> None:
        """Join the default and the control group (warning first, on local rank 0, when a
        multi-node job's host name resolves to loopback). A gloo group that cannot connect its
        ranks is a UsageError naming the likely cause (`gloo_connect_error`)."""
        timeout = timedelta(seconds=self.timeout_s)
        warning = loopback_warning(self.info)
        if warning and self.info.local_rank == 0:
            print(f"wattbench: {warning}", file=sys.stderr, flush=True)
        try:
            dist.init_process_group(self.backend, timeout=timeout)
            # Always a group of its own, even where the default group is gloo too: a workload's
            # collectives (the collective workload's) never interleave with the harness's.
            self.control = dist.new_group(backend="gloo", timeout=timeout)
        except RuntimeError as exc:
            why = gloo_connect_error(exc)
            if why is None:
                raise
            raise UsageError(why) from None
        self._store = dist.distributed_c10d._get_default_store()

    def barrier(self) -> None:
        """Wait for every rank on the control group."""
        dist.barrier(group=self.control)

    def leave(self) -> None:
        """Destroy the groups; a job already torn down is not an error here."""
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
