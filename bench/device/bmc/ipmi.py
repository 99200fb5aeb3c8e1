"""Node power over IPMI: DCMI "Get Power Reading" (netfn 0x2C, command 0x02), through pyghmi.

The reply (DCMI 1.5, table 6-16) holds, after the group id 0xDC, the current, minimum, maximum
and average power in watts (16 bits each), a timestamp, the statistics reporting period in
milliseconds (what min/max/average are taken over) and the reading state (bit 6: measurement
active). The current power is used; the period is recorded as the BMC's averaging time.

pyghmi's client runs in a child process of its own (`serve`), never in the measuring process:

- its event loop (one shared I/O thread, waiters woken by events) then never competes with the
  measuring process's threads for the interpreter: in-process, beside a busy thread, a poll took
  11-31 ms on the 2-core VM; from the child, 6-14 ms;
- its login retries block for about 30 s against a BMC that does not answer, and a child past
  its deadline is killed, where a thread could only be abandoned.

And pyghmi misses a reply that its I/O thread takes in before the request's waiter is registered
(the client descheduled between sending and waiting, as on a busy CPU): the waiter then sleeps
until its wait times out, and only then finds the reply. With the target's timeout as that wait,
one request in 20 took 5 s with two busy processes on the VM; the first wait is FIRST_REPLY_S
instead, so such a request costs at most that, and a BMC slower than that is sent the
(idempotent) request again.

The parent (`DcmiClient`) writes the target, credentials included, as one JSON line to the
child's stdin (never its command line or environment, which `ps` shows), then asks for a reading
with a numbered line and waits at most the target's timeout for the answer with that number; a
late answer to an earlier request is dropped (and the child answers only the newest request
waiting, so a slow BMC is not asked again for readings nobody awaits). The child logs out and
exits when its stdin closes, so it never outlives the run; it is in a process group of its own,
so Ctrl-C at the terminal reaches the run (which decides what to do) and not the reader; an
exception in it comes back as one line.
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.device.bmc.base import SOURCE_IPMI_DCMI, BmcError, BmcSample, reason
from bench.device.bmc.target import PASSWORD_ENV, USERNAME_ENV, NodeTarget

DCMI_NETFN, GET_POWER_READING, DCMI_GROUP = 0x2C, 0x02, 0xDC
SYSTEM_POWER_STATISTICS = 0x01
MEASUREMENT_ACTIVE = 0x40
FIRST_REPLY_S = 0.5  # pyghmi's wait for a reply before it sends the request again (docstring)
START_S = 30.0  # for the child's interpreter and its import of pyghmi, before the login's deadline
PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])
# The child: this package from where the parent has it (a checkout or site-packages), put first
# only where the interpreter would not find it anyway.
CHILD_MAIN = (
    "import sys; root = sys.argv[1]; sys.path.insert(0, root) if root not in sys.path else None; "
    "from bench.device.bmc.ipmi import serve; serve()"
)


class Lines:
    """Newline-ended lines from a pipe's file descriptor, read without blocking past a deadline
    (select, then os.read: a buffered reader could hold a line that select no longer sees)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.ended = fd, False
        self._pending = b""

    def next(self, deadline: float | None) -> bytes | None:
        """The next line; None at the deadline (monotonic seconds; None: wait) or the pipe's end."""
        while b"\n" not in self._pending:
            left = None if deadline is None else deadline - time.monotonic()
            if self.ended or (left is not None and left <= 0) or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            self.ended = not chunk
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line

    def newest(self, line: bytes) -> bytes:
        """`line`, or the last of the lines already waiting behind it (requests that piled up
        while the BMC was slow: only the newest is still awaited)."""
        while True:
            later = self.next(time.monotonic())
            if later is None:
                return line
            line = later


class DcmiClient:
    """One IPMI session with the BMC, held by a child process and read with DCMI's system power
    statistics (module docstring)."""

    source = SOURCE_IPMI_DCMI
    resource = "DCMI Get Power Reading (system power statistics)"
    declared_update_s: float | None = None

    def __init__(self, child: subprocess.Popen[bytes], where: str, timeout_s: float) -> None:
        assert child.stdout is not None
        self._child, self._where, self._timeout_s = child, where, timeout_s
        self._lines = Lines(child.stdout.fileno())
        self._asked = 0
        self.averaging_s: float | None = None

    @classmethod
    def open(cls, target: NodeTarget) -> DcmiClient:
        """Start the child, log in within the target's timeout and read once (a BMC without DCMI
        power says so now, not in the first window). BmcError (one line) otherwise; a child that
        has not logged in by then is killed."""
        where = f"IPMI BMC at {target.host}:{target.port}"
        child = subprocess.Popen(
            # -P: the current directory is not on the child's path (a ./bench there is not ours)
            [sys.executable, "-P", "-c", CHILD_MAIN, PACKAGE_ROOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # pyghmi prints its retries there; failures come back as lines
            env={k: v for k, v in os.environ.items() if k not in (USERNAME_ENV, PASSWORD_ENV)},
            process_group=0,  # Ctrl-C at the terminal is the run's to handle, not the reader's
        )
        client = cls(child, where, target.timeout_s)
        try:
            credentials = target.credentials
            client._send(
                {
                    "host": target.host,
                    "port": target.port,
                    "username": credentials.username,
                    "password": credentials.password,
                }
            )
            client._answer("started", START_S)
            client._answer("session", target.timeout_s)
            client.sample()
        except BmcError as exc:
            client.close(wait_s=0.0)
            raise BmcError(f"{where}: {str(exc).removeprefix(where + ': ')}") from None
        return client

    def sample(self) -> BmcSample:
        self._asked += 1
        self._send({"id": self._asked})
        reply = self._answer(self._asked, self._timeout_s)
        self.averaging_s = reply.get("averaging_s")
        return BmcSample(watts=float(reply["watts"]))

    def close(self, wait_s: float | None = None) -> None:
        """Close the child's stdin (it logs out and exits); kill it if it has not within `wait_s`
        (default: the target's timeout)."""
        child = self._child
        try:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(self._timeout_s if wait_s is None else wait_s)
        except (OSError, subprocess.TimeoutExpired):
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()

    def _send(self, message: dict[str, Any]) -> None:
        try:
            assert self._child.stdin is not None
            self._child.stdin.write(json.dumps(message).encode() + b"\n")
            self._child.stdin.flush()
        except (OSError, ValueError):  # ValueError: written after close()
            raise BmcError(f"{self._where}: the IPMI reader has exited ({self._child.poll()})") from None

    def _answer(self, key: int | str, within_s: float) -> dict[str, Any]:
        """The child's line for `key` (a request number, or a stage: "started", "session"); earlier
        requests' late answers are skipped. BmcError on its error, its exit or the deadline."""
        deadline = time.monotonic() + within_s
        while True:
            line = self._lines.next(deadline)
            if line is None:
                if not self._lines.ended:
                    raise BmcError(
                        f"no answer within {within_s:g} s" if isinstance(key, int) else f"no {key} within {within_s:g} s"
                    )
                try:
                    code = self._child.wait(1.0)  # its output ended: it is exiting
                except subprocess.TimeoutExpired:
                    code = None
                raise BmcError(f"the IPMI reader has exited ({code})")
            try:
                reply: dict[str, Any] = json.loads(line)
            except ValueError:
                continue  # not the reader's: its stdout carries nothing else, but never trust it to
            if not isinstance(reply, dict):
                continue
            if "crash" in reply:
                raise BmcError(f"the IPMI reader failed: {reply['crash']}")
            if reply.get("id", reply.get("stage")) != key:
                continue
            if "error" in reply:
                raise BmcError(reply["error"])
            return reply


def read_power(command: Any) -> tuple[float, float | None]:
    """One DCMI Get Power Reading on a pyghmi session: (current watts, statistics period in s)."""
    try:
        reply = command.xraw_command(
            netfn=DCMI_NETFN,
            command=GET_POWER_READING,
            data=(DCMI_GROUP, SYSTEM_POWER_STATISTICS, 0, 0),
            timeout=FIRST_REPLY_S,
        )
    except Exception as exc:  # noqa: BLE001 - IpmiException or a socket error: the poll records it
        raise BmcError(f"DCMI Get Power Reading: {reason(exc)}") from None
    data = bytes(reply["data"])
    if len(data) < 18 or data[0] != DCMI_GROUP:
        raise BmcError(f"DCMI Get Power Reading: a reply of {len(data)} bytes, not DCMI's 18")
    current, _minimum, _maximum, _average, _stamp, period_ms, state = struct.unpack_from("<HHHHIIB", data, 1)
    if not state & MEASUREMENT_ACTIVE:
        raise BmcError("DCMI Get Power Reading: power measurement is not active on this BMC (dcmi power activate)")
    return float(current), period_ms / 1000.0 if period_ms else None


def serve() -> None:
    """The child's side: read the target from stdin, log in, answer the newest numbered request
    waiting with one JSON line on stdout, and log out when stdin closes. Nothing else reaches
    that stdout (pyghmi's own prints go to stderr); an exception is sent back as one line."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # in case the parent's group is signalled all the same

    def say(**reply: Any) -> None:
        out.write(json.dumps(reply) + "\n")
        out.flush()

    try:
        _serve(Lines(0), say)
    except Exception as exc:  # noqa: BLE001 - whatever it is, the parent says it in one line
        say(crash=reason(exc))


def _serve(requests: Lines, say: Callable[..., None]) -> None:
    target = json.loads(requests.next(None) or b"{}")
    try:
        from pyghmi.ipmi import command
    except ImportError:
        return say(stage="started", error="IPMI needs pyghmi: pip install 'wattbench[node]' (or pyghmi)")
    say(stage="started")
    try:
        session = command.Command(bmc=target["host"], userid=target["username"], password=target["password"], port=target["port"])
    except Exception as exc:  # noqa: BLE001 - pyghmi raises its own and socket errors alike
        return say(stage="session", error=reason(exc))
    say(stage="session")
    while (line := requests.next(None)) is not None:
        request = json.loads(requests.newest(line))
        try:
            watts, averaging_s = read_power(session)
            say(id=request["id"], watts=watts, averaging_s=averaging_s)
        except BmcError as exc:
            say(id=request["id"], error=str(exc))
    try:
        session.ipmi_session.logout()
    except Exception:  # noqa: BLE001, S110 - a BMC gone away needs no logout
        pass
    return None
