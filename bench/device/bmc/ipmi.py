"""Node power over IPMI: DCMI "Get Power Reading" (netfn 0x2C, command 0x02), through pyghmi.

The reply (DCMI 1.5, table 6-16) holds, after the group id 0xDC, the current, minimum, maximum
and average power in watts (16 bits each), a timestamp, the statistics reporting period in
milliseconds (what min/max/average are taken over) and the reading state (bit 6: measurement
active). The current power is used; the period is recorded as the BMC's averaging time.

pyghmi's client runs in a child process of its own (`python -m bench.device.bmc.ipmi`), never
in the measuring process:

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
late answer to an earlier request is dropped. The child logs out and exits when its stdin closes,
so it never outlives the run.
"""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import time
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


class DcmiClient:
    """One IPMI session with the BMC, held by a child process and read with DCMI's system power
    statistics (module docstring)."""

    source = SOURCE_IPMI_DCMI
    resource = "DCMI Get Power Reading (system power statistics)"
    declared_update_s: float | None = None

    def __init__(self, child: subprocess.Popen[bytes], where: str, timeout_s: float) -> None:
        self._child, self._where, self._timeout_s = child, where, timeout_s
        self._pending = b""
        self._asked = 0
        self.averaging_s: float | None = None

    @classmethod
    def open(cls, target: NodeTarget) -> DcmiClient:
        """Start the child, log in within the target's timeout and read once (a BMC without DCMI
        power says so now, not in the first window). BmcError (one line) otherwise."""
        where = f"IPMI BMC at {target.host}:{target.port}"
        env = {k: v for k, v in os.environ.items() if k not in (USERNAME_ENV, PASSWORD_ENV)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.device.bmc.ipmi"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # pyghmi prints retries there; every failure comes back as a line
            env=env,
        )
        client = cls(child, where, target.timeout_s)
        try:
            credentials = target.credentials
            client._send(
                {
                    "host": target.host,
                    "port": target.port,
                    "timeout_s": target.timeout_s,
                    "username": credentials.username,
                    "password": credentials.password,
                }
            )
            client._answer("started", START_S)
            client._answer("session", target.timeout_s)
            client.sample()
        except BmcError as exc:
            client.close()
            raise BmcError(f"{where}: {str(exc).removeprefix(where + ': ')}") from None
        return client

    def sample(self) -> BmcSample:
        self._asked += 1
        self._send({"id": self._asked})
        reply = self._answer(self._asked, self._timeout_s)
        self.averaging_s = reply.get("averaging_s")
        return BmcSample(watts=float(reply["watts"]))

    def close(self) -> None:
        """Close the child's stdin (it logs out and exits); kill it if it has not within the timeout."""
        try:
            if self._child.stdin is not None:
                self._child.stdin.close()
            self._child.wait(self._timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            self._child.kill()
            self._child.wait()

    def _send(self, message: dict[str, Any]) -> None:
        try:
            assert self._child.stdin is not None
            self._child.stdin.write(json.dumps(message).encode() + b"\n")
            self._child.stdin.flush()
        except OSError:
            raise BmcError(f"{self._where}: the IPMI reader has exited ({self._child.poll()})") from None

    def _answer(self, key: int | str, within_s: float) -> dict[str, Any]:
        """The child's line for `key` (a request number, or a stage: "started", "session"); earlier
        requests' late answers are skipped. BmcError on its error, its exit or the deadline."""
        deadline = time.monotonic() + within_s
        while True:
            line = self._line(deadline)
            if line is None:
                code = self._child.poll()
                if code is None:
                    raise BmcError(
                        f"no answer within {within_s:g} s" if isinstance(key, int) else f"no {key} within {within_s:g} s"
                    )
                raise BmcError(f"the IPMI reader has exited ({code})")
            try:
                reply: dict[str, Any] = json.loads(line)
            except ValueError:
                continue  # not the reader's: its stdout carries nothing else, but never trust it to
            if not isinstance(reply, dict) or reply.get("id", reply.get("stage")) != key:
                continue
            if "error" in reply:
                raise BmcError(reply["error"])
            return reply

    def _line(self, deadline: float) -> bytes | None:
        assert self._child.stdout is not None
        fd = self._child.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line


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
    """The child's side: read the target from stdin, log in, answer each numbered request with
    one JSON line on stdout, and log out when stdin closes. Nothing else reaches that stdout:
    pyghmi's own prints go to stderr."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def say(**reply: Any) -> None:
        out.write(json.dumps(reply) + "\n")
        out.flush()

    target = json.loads(sys.stdin.readline() or "{}")
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
    for line in sys.stdin:
        request = json.loads(line)
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


if __name__ == "__main__":
    serve()
