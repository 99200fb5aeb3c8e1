"""Node power over Redfish, through DMTF's `redfish` client library.

At `open` the client logs in (a Redfish session: the password is sent once, in the body of the
session request, and a token is used from then on), walks the chassis and picks the best reading
the BMC serves, in this order:

1. an energy counter: the chassis `EnvironmentMetrics` `EnergyJoules` (or `EnergykWh`) reading,
   else a member of the chassis `Sensors` whose `ReadingType` is `EnergyJoules`, `EnergyWh` or
   `EnergykWh`: a window's node energy is then the counter's difference, not a sum of polled watts;
2. the chassis power, `EnvironmentMetrics.PowerWatts`;
3. the power supplies' input power, summed over `PowerSubsystem/PowerSupplies/*/Metrics`
   `InputPowerWatts`;
4. `Power.PowerControl[0].PowerConsumedWatts`, deprecated since Redfish 2020.4, which older BMCs
   still serve alone.

The chassis is the target's `chassis` id, else the first chassis that has one of these. The
period the BMC declares for a reading (a `Sensor`'s `SensingInterval`, an ISO 8601 duration) is
kept as its update period. The library's own log lines can carry the session token: its loggers
are held at WARNING while this module uses them. TLS certificates are verified against the
target's `ca_file`, else the bundle requests uses, unless the target says `verify_tls = false`.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.device.bmc.base import (
    SOURCE_REDFISH_ENERGY,
    SOURCE_REDFISH_POWER,
    SOURCE_REDFISH_POWER_CONTROL,
    SOURCE_REDFISH_PSU,
    BmcError,
    BmcSample,
    reason,
)
from bench.device.bmc.target import NodeTarget
from bench.units import finite_number

ENERGY_UNITS_J = {"EnergyJoules": 1.0, "EnergyWh": 3600.0, "EnergykWh": 3.6e6}
MAX_SENSORS = 200  # members of a chassis' Sensors read while looking for an energy counter
_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def iso_duration_s(text: object) -> float | None:
    """Seconds of an ISO 8601 duration as Redfish writes them ("PT1S", "PT0.5S", "PT2M"); None
    for anything else."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None or not any(match.groupdict().values()):
        return None
    scale = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    return sum(float(v) * scale[k] for k, v in match.groupdict().items() if v)


def _link(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    uri = value.get("@odata.id") if isinstance(value, Mapping) else None
    return uri if isinstance(uri, str) else None


@dataclass(frozen=True)
class _Reading:
    """How to read one kind of reading: the source, the URIs to GET, and how to get the
    figure out of their documents (None when absent)."""

    source: str
    resource: str
    uris: tuple[str, ...]
    figure: Callable[[list[Mapping[str, Any]]], float | None]
    energy: bool
    declared_update_s: float | None = None


class RedfishClient:
    """A Redfish session and the reading chosen at `open`."""

    averaging_s: float | None = None

    def __init__(self, client: Any, reading: _Reading, timeout_s: float) -> None:
        self._client, self._reading, self._timeout_s = client, reading, timeout_s
        self.source, self.resource = reading.source, reading.resource
        self.declared_update_s = reading.declared_update_s

    @classmethod
    def open(cls, target: NodeTarget) -> RedfishClient:
        try:
            import redfish
        except ImportError:
            raise BmcError("Redfish needs the redfish package: pip install 'wattbench[node]' (or redfish)") from None
        _quiet_library()
        cafile = target.ca_file
        if target.tls and target.verify_tls and cafile is None:
            import requests.certs

            cafile = requests.certs.where()  # the library verifies nothing without a cafile
        where = target.base_url
        try:
            client = redfish.redfish_client(
                base_url=where,
                username=target.credentials.username,
                password=target.credentials.password,
                cafile=cafile if target.tls and target.verify_tls else None,
                timeout=target.timeout_s,
                max_retry=1,
            )
            client.login(auth="session")
        except Exception as exc:  # noqa: BLE001 - the library raises its own, requests' and socket errors
            raise BmcError(f"Redfish service at {where}: {reason(exc)}") from None
        try:
            reading = _choose(lambda uri: _get(client, uri, target.timeout_s), target.chassis)
        except BmcError as exc:
            _logout(client)
            raise BmcError(f"Redfish service at {where}: {exc}") from None
        made = cls(client, reading, target.timeout_s)
        made.sample()
        return made

    def sample(self) -> BmcSample:
        docs = [_get(self._client, uri, self._timeout_s) for uri in self._reading.uris]
        figure = self._reading.figure(docs)
        if figure is None:
            raise BmcError(f"{self.resource}: no reading in the BMC's answer")
        return BmcSample(energy_j=figure) if self._reading.energy else BmcSample(watts=figure)

    def close(self) -> None:
        _logout(self._client)


def _quiet_library() -> None:
    for name in ("redfish", "urllib3"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def _logout(client: Any) -> None:
    try:
        client.logout()
    except Exception:  # noqa: BLE001, S110 - a service gone away needs no logout
        pass


def _get(client: Any, uri: str, timeout_s: float) -> Mapping[str, Any]:
    try:
        response = client.get(uri, timeout=timeout_s, max_retry=1)
    except Exception as exc:  # noqa: BLE001 - requests' and the library's errors alike
        raise BmcError(f"GET {uri}: {reason(exc)}") from None
    if response.status != 200:
        raise BmcError(f"GET {uri}: HTTP {response.status}")
    doc = response.dict
    if not isinstance(doc, Mapping):
        raise BmcError(f"GET {uri}: not a JSON object")
    return doc


def _members(get: Callable[[str], Mapping[str, Any]], uri: str) -> list[str]:
    members = get(uri).get("Members", [])
    return [m["@odata.id"] for m in members if isinstance(m, Mapping) and isinstance(m.get("@odata.id"), str)]


def _choose(get: Callable[[str], Mapping[str, Any]], chassis_id: str | None) -> _Reading:
    """The best reading of the chosen chassis (module docstring)."""
    chassis_uri = _link(get("/redfish/v1/"), "Chassis")
    if chassis_uri is None:
        raise BmcError("the service root links no Chassis")
    uris = _members(get, chassis_uri)
    if chassis_id is not None:
        uris = [u for u in uris if u.rstrip("/").rsplit("/", 1)[-1] == chassis_id]
        if not uris:
            raise BmcError(f"no chassis {chassis_id!r} in {chassis_uri}")
    for uri in uris:
        reading = _reading_of(get, get(uri))
        if reading is not None:
            return reading
    raise BmcError("no chassis serves power or energy (EnvironmentMetrics, Sensors, PowerSubsystem or Power)")


def _reading_of(get: Callable[[str], Mapping[str, Any]], chassis: Mapping[str, Any]) -> _Reading | None:
    metrics_uri = _link(chassis, "EnvironmentMetrics")
    metrics = get(metrics_uri) if metrics_uri else {}
    for key in ("EnergyJoules", "EnergykWh"):
        if metrics_uri and finite_number(_excerpt(metrics, key)) is not None:
            scale = ENERGY_UNITS_J[key]
            return _Reading(
                SOURCE_REDFISH_ENERGY,
                f"{metrics_uri} {key}",
                (metrics_uri,),
                functools.partial(_excerpt_figure, key=key, scale=scale),
                energy=True,
                declared_update_s=_interval(get, metrics.get(key)),
            )
    sensor = _energy_sensor(get, _link(chassis, "Sensors"))
    if sensor is not None:
        return sensor
    if metrics_uri and finite_number(_excerpt(metrics, "PowerWatts")) is not None:
        return _Reading(
            SOURCE_REDFISH_POWER,
            f"{metrics_uri} PowerWatts",
            (metrics_uri,),
            lambda docs: finite_number(_excerpt(docs[0], "PowerWatts")),
            energy=False,
            declared_update_s=_interval(get, metrics.get("PowerWatts")),
        )
    return _supplies(get, _link(chassis, "PowerSubsystem")) or _power_control(get, _link(chassis, "Power"))


def _excerpt(doc: Mapping[str, Any], key: str) -> object:
    value = doc.get(key)
    return value.get("Reading") if isinstance(value, Mapping) else None


def _scaled(value: object, scale: float) -> float | None:
    number = finite_number(value)
    return number * scale if number is not None else None


def _excerpt_figure(docs: list[Mapping[str, Any]], key: str, scale: float) -> float | None:
    return _scaled(_excerpt(docs[0], key), scale)


def _sensor_figure(docs: list[Mapping[str, Any]], scale: float) -> float | None:
    return _scaled(docs[0].get("Reading"), scale)


def _interval(get: Callable[[str], Mapping[str, Any]], excerpt: object) -> float | None:
    """The SensingInterval of the Sensor an excerpt's DataSourceUri names, if it says one."""
    uri = excerpt.get("DataSourceUri") if isinstance(excerpt, Mapping) else None
    if not isinstance(uri, str):
        return None
    try:
        return iso_duration_s(get(uri).get("SensingInterval"))
    except BmcError:
        return None


def _energy_sensor(get: Callable[[str], Mapping[str, Any]], sensors_uri: str | None) -> _Reading | None:
    if sensors_uri is None:
        return None
    for uri in _members(get, sensors_uri)[:MAX_SENSORS]:
        sensor = get(uri)
        kind = sensor.get("ReadingType")
        if (
            kind in ENERGY_UNITS_J
            and sensor.get("PhysicalContext") in (None, "Chassis")
            and finite_number(sensor.get("Reading")) is not None
        ):
            scale = ENERGY_UNITS_J[str(kind)]
            return _Reading(
                SOURCE_REDFISH_ENERGY,
                f"{uri} ({kind})",
                (uri,),
                functools.partial(_sensor_figure, scale=scale),
                energy=True,
                declared_update_s=iso_duration_s(sensor.get("SensingInterval")),
            )
    return None


def _supplies(get: Callable[[str], Mapping[str, Any]], subsystem_uri: str | None) -> _Reading | None:
    supplies_uri = _link(get(subsystem_uri), "PowerSupplies") if subsystem_uri else None
    if supplies_uri is None:
        return None
    metrics = [m for m in (_link(get(uri), "Metrics") for uri in _members(get, supplies_uri)) if m]
    if not metrics or any(finite_number(_excerpt(get(m), "InputPowerWatts")) is None for m in metrics):
        return None

    def summed(docs: list[Mapping[str, Any]]) -> float | None:
        figures = [finite_number(_excerpt(d, "InputPowerWatts")) for d in docs]
        return None if any(f is None for f in figures) else float(sum(f for f in figures if f is not None))

    return _Reading(
        SOURCE_REDFISH_PSU, f"{supplies_uri} (InputPowerWatts of {len(metrics)})", tuple(metrics), summed, energy=False
    )


def _power_control(get: Callable[[str], Mapping[str, Any]], power_uri: str | None) -> _Reading | None:
    if power_uri is None:
        return None

    def consumed(docs: list[Mapping[str, Any]]) -> float | None:
        controls = docs[0].get("PowerControl")
        first = controls[0] if isinstance(controls, list) and controls and isinstance(controls[0], Mapping) else {}
        return finite_number(first.get("PowerConsumedWatts"))

    if consumed([get(power_uri)]) is None:
        return None
    return _Reading(
        SOURCE_REDFISH_POWER_CONTROL, f"{power_uri} PowerControl[0].PowerConsumedWatts", (power_uri,), consumed, energy=False
    )
