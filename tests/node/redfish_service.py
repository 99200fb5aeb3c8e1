"""A Redfish service on the loopback for the node-power tests: the mockup under
tests/node/redfish_mockup served over HTTP, with readings that follow a power trace.

`RedfishService(user, password, watts, period_s, profile)` starts a `ThreadingHTTPServer` on a
free port of 127.0.0.1 (`url` is where it listens). The node draws `watts[k]` from k*period_s
seconds after the start (the last value from then on); each request sees the live figures:
`EnvironmentMetrics.PowerWatts`, the `TotalPower` sensor, each power supply's half of the input
power and `PowerControl[0].PowerConsumedWatts` are the watts now, and `EnergyJoules` (and the
`TotalEnergy` sensor) the trace's exact integral so far, updated like a BMC's: once a period.

`profile` takes away what a BMC of that kind lacks: "energy" serves everything; "power" no energy
counter (EnvironmentMetrics without EnergyJoules, no energy sensor); "supplies" neither counter nor
EnvironmentMetrics; "legacy" only the deprecated Power resource.

Sessions as Redfish has them: POST to SessionService/Sessions with UserName and Password
returns an X-Auth-Token; every resource but the service root needs it (or HTTP Basic). `requests`
records (method, path, headers, body) of everything received, for the tests on credentials.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MOCKUP = Path(__file__).parent / "redfish_mockup"
CHASSIS = "/redfish/v1/Chassis/1U"
SESSIONS = "/redfish/v1/SessionService/Sessions"
PROFILES = ("energy", "power", "supplies", "legacy")


def _load() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in MOCKUP.rglob("index.json"):
        uri = "/" + str(path.parent.relative_to(MOCKUP))
        docs[uri] = json.loads(path.read_text())
    return docs


class RedfishService:
    def __init__(self, user: str, password: str, watts: list[float], period_s: float, profile: str = "energy") -> None:
        assert profile in PROFILES, profile
        self.user, self.password, self.watts, self.period_s, self.profile = user, password, watts, period_s, profile
        self.docs = self._shaped(_load())
        self.tokens: dict[str, str] = {}  # token -> session URI
        self.requests: list[tuple[str, str, dict[str, str], str]] = []
        self.start = time.monotonic()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redfish+http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _shaped(self, docs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        chassis = docs[CHASSIS]
        if self.profile in ("power", "supplies", "legacy"):
            docs[CHASSIS + "/EnvironmentMetrics"].pop("EnergyJoules")
            sensors = docs[CHASSIS + "/Sensors"]
            sensors["Members"] = [m for m in sensors["Members"] if not m["@odata.id"].endswith("TotalEnergy")]
            docs.pop(CHASSIS + "/Sensors/TotalEnergy")
        if self.profile in ("supplies", "legacy"):
            chassis.pop("EnvironmentMetrics")
        if self.profile == "legacy":
            chassis.pop("PowerSubsystem")
            chassis.pop("Sensors")
        return docs

    # --- the node's power trace -------------------------------------------------------------

    def watts_at(self, t_s: float) -> float:
        """Watts `t_s` seconds after the start."""
        return float(self.watts[min(int(t_s / self.period_s), len(self.watts) - 1)])

    def joules_until(self, t_s: float) -> float:
        """The trace's exact integral from the start to `t_s` seconds."""
        whole = int(t_s / self.period_s)
        done = sum(self.watts_at(k * self.period_s) for k in range(whole)) * self.period_s
        return done + self.watts_at(t_s) * (t_s - whole * self.period_s)

    def _live(self, uri: str) -> dict[str, Any] | None:
        doc = self.docs.get(uri.rstrip("/") or "/")
        if doc is None:
            return None
        doc = copy.deepcopy(doc)
        t = time.monotonic() - self.start
        watts = self.watts_at(t)
        energy = self.joules_until(int(t / self.period_s) * self.period_s)  # updated once a period
        if "EnergyJoules" in doc:
            doc["EnergyJoules"]["Reading"] = energy
        if "PowerWatts" in doc:
            doc["PowerWatts"]["Reading"] = watts
        if doc.get("ReadingType") == "EnergyJoules":
            doc["Reading"] = energy
        elif doc.get("ReadingType") == "Power":
            doc["Reading"] = watts
        if "InputPowerWatts" in doc:
            doc["InputPowerWatts"]["Reading"] = watts / 2
        for control in doc.get("PowerControl", []):
            control["PowerConsumedWatts"] = watts
        return doc

    # --- HTTP -------------------------------------------------------------------------------

    def _authorised(self, headers: Any) -> bool:
        token = headers.get("X-Auth-Token")
        if token in self.tokens:
            return True
        basic = headers.get("Authorization", "")
        expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return basic == f"Basic {expected}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, doc: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> None:
                body = json.dumps(doc).encode() if doc is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def _record(self, body: str = "") -> None:
                service.requests.append((self.command, self.path, dict(self.headers), body))

            def do_GET(self) -> None:
                self._record()
                path = self.path.split("?")[0]
                if path.rstrip("/") != "/redfish/v1" and not service._authorised(self.headers):
                    return self._send(401, {"error": {"code": "Base.1.0.NoValidSession", "message": "no valid session"}})
                doc = service._live(path)
                return self._send(200, doc) if doc is not None else self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                self._record(body)
                if self.path.rstrip("/") != SESSIONS:
                    return self._send(405)
                try:
                    login = json.loads(body)
                except ValueError:
                    return self._send(400)
                if login.get("UserName") != service.user or login.get("Password") != service.password:
                    return self._send(401, {"error": {"message": "invalid credentials"}})
                token = secrets.token_hex(16)
                uri = f"{SESSIONS}/{len(service.tokens) + 1}"
                service.tokens[token] = uri
                return self._send(
                    201,
                    {"@odata.id": uri, "Id": uri.rsplit("/", 1)[-1], "UserName": login["UserName"]},
                    {"X-Auth-Token": token, "Location": uri},
                )

            def do_DELETE(self) -> None:
                self._record()
                for token, uri in list(service.tokens.items()):
                    if uri == self.path.rstrip("/"):
                        del service.tokens[token]
                        return self._send(204)
                return self._send(404)

        return Handler
