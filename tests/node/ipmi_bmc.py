"""A BMC on the loopback that answers IPMI DCMI "Get Power Reading", for the node-power tests.

Built on pyghmi's BMC server class (what virtualbmc builds on), run as its own process:

    python -m tests.node.ipmi_bmc PORT_FILE TRACE

It binds a free UDP port on 127.0.0.1, writes the port to PORT_FILE, and serves until killed.
The user and password come from the environment (SIM_BMC_USER, SIM_BMC_PASSWORD), never from
the command line. TRACE is "W1,W2,...@PERIOD_S": the reading steps through the watts, one value per
period, from the first power reading asked for (the client's check at log-in), and stays at the last; the reply's current and average
power are the step's value, its statistics period is PERIOD_S in milliseconds (DCMI 1.5, table
6-16: completion code, group 0xDC, current, minimum, maximum, average power as 16-bit little-endian
watts, a 32-bit timestamp, the 32-bit reporting period in ms, and the reading state, bit 6 set
while power measurement is active).
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
from pathlib import Path

import pyghmi.ipmi.bmc as bmc
import pyghmi.ipmi.private.serversession as serversession

DCMI_NETFN, GET_POWER_READING, DCMI_GROUP = 0x2C, 0x02, 0xDC


NO_CIPHER_SUITE_MATCH = 0x11  # RMCP+ status code (IPMI 2.0, table 13-15)
_open_session = serversession.ServerSession.create_open_session_response


def _cipher_suite_3_only(self, request: bytearray) -> bytearray:  # noqa: ANN001
    """pyghmi's server speaks cipher suite 3 (HMAC-SHA1) only, yet accepts its client's first
    proposal of suite 17 (HMAC-SHA256) and then answers in SHA1, which that client cannot read. A
    BMC without suite 17 declines the proposal with status 0x11, and the client then proposes
    suite 3: this makes the server do what such a BMC does."""
    if request[12] != 1:  # the proposed authentication algorithm: 1 is RAKP-HMAC-SHA1
        return bytearray([request[0], NO_CIPHER_SUITE_MATCH, 0, 0]) + request[4:8]
    return _open_session(self, request)


serversession.ServerSession.create_open_session_response = _cipher_suite_3_only


class PowerTraceBmc(bmc.Bmc):
    def __init__(self, authdata: dict, port: int, watts: list[int], period_s: float) -> None:
        super().__init__(authdata, port=port, address=os.environ.get("SIM_BMC_ADDRESS", "127.0.0.1"))
        self.watts, self.period_s = watts, period_s
        self.start: float | None = None

    def now_watts(self) -> int:
        if self.start is None:
            self.start = time.monotonic()
        step = int((time.monotonic() - self.start) / self.period_s)
        return self.watts[min(step, len(self.watts) - 1)]

    def handle_raw_request(self, request, session):  # noqa: ANN001 - pyghmi's signature
        if request["netfn"] == DCMI_NETFN and request["command"] == GET_POWER_READING:
            if list(request["data"][:2]) != [DCMI_GROUP, 0x01]:
                return session.send_ipmi_response(code=0xCC)  # only mode 1: system power statistics
            w = self.now_watts()
            data = struct.pack("<BHHHHIIB", DCMI_GROUP, w, w, w, w, int(time.time()), int(self.period_s * 1000), 0x40)
            return session.send_ipmi_response(data=list(data))
        return super().handle_raw_request(request, session)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    port_file, trace = Path(sys.argv[1]), sys.argv[2]
    values, period = trace.split("@")
    port = free_udp_port()
    server = PowerTraceBmc(
        {os.environ["SIM_BMC_USER"]: os.environ["SIM_BMC_PASSWORD"]},
        port,
        [int(v) for v in values.split(",")],
        float(period),
    )
    port_file.write_text(str(port))
    server.listen(1)


if __name__ == "__main__":
    main()
