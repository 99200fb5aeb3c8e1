"""Node power over IPMI: DCMI "Get Power Reading" (netfn 0x2C, command 0x02), through pyghmi.

The reply (DCMI 1.5, table 6-16) holds, after the group id 0xDC, the current, minimum, maximum
and average power in watts (16 bits each), a timestamp, the statistics reporting period in
milliseconds (what min/max/average are taken over) and the reading state (bit 6: measurement
active). The current power is used; the period is recorded as the BMC's averaging time.

pyghmi's session login and its retries block for tens of seconds against a BMC that does not
answer: `open` waits for the login on a thread for at most the target's timeout, and `sample`
is only ever called from the node-power thread (`bench.monitor.node`), never where it could
stall a run.
"""

from __future__ import annotations

import struct
import threading
from typing import Any

from bench.device.bmc.base import SOURCE_IPMI_DCMI, BmcError, BmcSample, reason
from bench.device.bmc.target import NodeTarget

DCMI_NETFN, GET_POWER_READING, DCMI_GROUP = 0x2C, 0x02, 0xDC
SYSTEM_POWER_STATISTICS = 0x01
MEASUREMENT_ACTIVE = 0x40


class DcmiClient:
    """One IPMI session with the BMC, read with DCMI's system power statistics."""

    source = SOURCE_IPMI_DCMI
    resource = "DCMI Get Power Reading (system power statistics)"
    declared_update_s: float | None = None

    def __init__(self, command: Any, timeout_s: float) -> None:
        self._command, self._timeout_s = command, timeout_s
        self.averaging_s: float | None = None

    @classmethod
    def open(cls, target: NodeTarget) -> DcmiClient:
        try:
            from pyghmi.ipmi import command
        except ImportError:
            raise BmcError("IPMI needs pyghmi: pip install 'wattbench[node]' (or pyghmi)") from None
        done: dict[str, Any] = {}

        def login() -> None:
            try:
                done["command"] = command.Command(
                    bmc=target.host, userid=target.credentials.username, password=target.credentials.password, port=target.port
                )
            except Exception as exc:  # noqa: BLE001 - pyghmi raises its own and socket errors alike
                done["error"] = exc

        thread = threading.Thread(target=login, name="wattbench-ipmi-login", daemon=True)
        thread.start()
        thread.join(target.timeout_s)
        if "command" not in done:
            why = reason(done["error"]) if "error" in done else f"no session within {target.timeout_s:g} s"
            raise BmcError(f"IPMI BMC at {target.host}:{target.port}: {why}")
        client = cls(done["command"], target.timeout_s)
        client.sample()  # a BMC without DCMI power says so now, not in the first window
        return client

    def sample(self) -> BmcSample:
        try:
            reply = self._command.xraw_command(
                netfn=DCMI_NETFN,
                command=GET_POWER_READING,
                data=(DCMI_GROUP, SYSTEM_POWER_STATISTICS, 0, 0),
                timeout=self._timeout_s,
            )
        except Exception as exc:  # noqa: BLE001 - IpmiException or a socket error: the poll records it
            raise BmcError(f"DCMI Get Power Reading: {reason(exc)}") from None
        data = bytes(reply["data"])
        if len(data) < 18 or data[0] != DCMI_GROUP:
            raise BmcError(f"DCMI Get Power Reading: a reply of {len(data)} bytes, not DCMI's 18")
        current, _minimum, _maximum, _average, _stamp, period_ms, state = struct.unpack_from("<HHHHIIB", data, 1)
        if not state & MEASUREMENT_ACTIVE:
            raise BmcError("DCMI Get Power Reading: power measurement is not active on this BMC (dcmi power activate)")
        self.averaging_s = period_ms / 1000.0 if period_ms else None
        return BmcSample(watts=float(current))

    def close(self) -> None:
        try:
            self._command.ipmi_session.logout()
        except Exception:  # noqa: BLE001, S110 - a BMC gone away needs no logout
            pass
