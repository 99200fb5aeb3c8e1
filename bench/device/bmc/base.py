"""What every BMC client speaks: a sample, the protocol a client follows, its error, and the
names of the readings (a window's node energy says which it came from)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

SOURCE_IPMI_DCMI = "ipmi_dcmi_power"
SOURCE_REDFISH_ENERGY = "redfish_energy"
SOURCE_REDFISH_POWER = "redfish_power"
SOURCE_REDFISH_PSU = "redfish_psu_input_power"
SOURCE_REDFISH_POWER_CONTROL = "redfish_power_control"


class BmcError(Exception):
    """The BMC could not be reached or read; the message says why in one line, never with a
    credential in it."""


@dataclass(frozen=True)
class BmcSample:
    """One answer of the BMC: watts, or its energy counter in joules since its own origin."""

    watts: float | None = None
    energy_j: float | None = None


class BmcClient(Protocol):
    source: str  # what a window's node energy says it came from (SOURCE_*)
    resource: str  # what is read, for the result file: "DCMI Get Power Reading", a Redfish URI
    declared_update_s: float | None  # the period the BMC says its reading has (Redfish SensingInterval)
    averaging_s: float | None  # the period the BMC averages a reading over (DCMI statistics period)

    def sample(self) -> BmcSample:
        """The BMC's reading now. BmcError when it cannot be read."""
        ...

    def close(self) -> None:
        """End the session (log out)."""
        ...


def reason(exc: BaseException) -> str:
    """An exception as one short line for a BmcError: its type and the first line of its message
    (the libraries' messages name the host and the failure, never the credentials)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
