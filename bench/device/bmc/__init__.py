"""The node's baseboard management controller (BMC): whole-server power beside the GPUs' own.

A GPU's joules stop at its board; CPUs, memory, NICs, fans and power supplies add to them, and
only the node's own meter sees that. Two protocols read it:

- IPMI DCMI "Get Power Reading" (`bench.device.bmc.ipmi`, through pyghmi): the system's power
  in watts, averaged by the BMC over its statistics period;
- Redfish (`bench.device.bmc.redfish`, through DMTF's `redfish` client): an energy counter where
  the BMC has one (the chassis `EnvironmentMetrics` `EnergyJoules`/`EnergykWh`, or a `Sensors`
  member of an energy reading type), else the chassis power (`EnvironmentMetrics.PowerWatts`),
  the power supplies' input power (`PowerSubsystem`), or the deprecated
  `Power.PowerControl[].PowerConsumedWatts` older BMCs still serve.

A `BmcClient` answers `sample()` with one `BmcSample`; `bench.monitor.node` polls it on its own
thread and turns the samples into a window's node energy. This package is the only place that
imports pyghmi or redfish (each lazily, in its own module: both are optional, `pip install
wattbench[node]`).
"""

from __future__ import annotations

from bench.device.bmc.base import (
    SOURCE_IPMI_DCMI,
    SOURCE_REDFISH_ENERGY,
    SOURCE_REDFISH_POWER,
    SOURCE_REDFISH_POWER_CONTROL,
    SOURCE_REDFISH_PSU,
    BmcClient,
    BmcError,
    BmcSample,
)
from bench.device.bmc.target import NodeTarget

__all__ = [
    "SOURCE_IPMI_DCMI",
    "SOURCE_REDFISH_ENERGY",
    "SOURCE_REDFISH_POWER",
    "SOURCE_REDFISH_POWER_CONTROL",
    "SOURCE_REDFISH_PSU",
    "BmcClient",
    "BmcError",
    "BmcSample",
    "connect",
]


def connect(target: NodeTarget) -> BmcClient:
    """A logged-in client for `target`; BmcError (one line) when the library is missing, the BMC
    cannot be reached or refuses the credentials, or serves no power reading."""
    if target.protocol == "ipmi":
        from bench.device.bmc.ipmi import DcmiClient

        return DcmiClient.open(target)
    from bench.device.bmc.redfish import RedfishClient

    return RedfishClient.open(target)
