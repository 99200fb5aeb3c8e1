"""A synthetic fleet of merged node files, made from the real result files in results/examples.

Each node file is what a one-node torchrun job of `gpus` ranks writes ("wattbench.run/2"): its
cases are the example files' real case records (cycled, each copy told apart by a `variant`
parameter), run on eight GPUs whose identities (host, UUID, serial, slot, PCIe address) are made
up, and each rank's figures are the case's real ones times noise: multiplicative, normal with a
1% standard deviation truncated at +-2% (`NOISE_SD`, `NOISE_MAX`), drawn per GPU and case from a
seeded generator, so a fleet is the same every time. The clock (1,980 MHz), temperatures (62 C)
and power follow the same noise; the health signals are a healthy H100's.

Faults (`Fault`) are what an acceptance run is there to find, injected into named GPUs or nodes:
slower (throughput down), hungrier (power and energy up), throttled (a lower clock, a
`throttled:hw_thermal` flag and the throughput the clock costs), a PCIe link trained down, and a
whole node slower. The store never sees this module: its input is plain result files.

    python benchmarks/fleet_synthetic.py OUT_DIR [--nodes 64] [--gpus 8] [--cases 20]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "results" / "examples"
NOISE_SD, NOISE_MAX = 0.01, 0.02
GPU_NAME = "NVIDIA H100 80GB HBM3"
DRIVER, TORCH = "560.35.03", "2.13.0+cu128"
SM_CLOCK_MHZ, TEMPERATURE_C = 1980.0, 62.0


@dataclass(frozen=True)
class Fault:
    """What is wrong with a GPU (node, slot) or, with slot None, with every GPU of a node.
    Factors multiply the healthy figure: throughput 0.9 is 10% slower."""

    node: int
    slot: int | None = None
    throughput: float = 1.0
    power: float = 1.0
    clock_mhz: float | None = None
    throttled: str | None = None
    pcie: tuple[int, int] | None = None  # (generation, width) the link trained to
    xid: tuple[int, ...] = ()  # Xid events seen during the run


@dataclass
class FleetSpec:
    nodes: int = 64
    gpus: int = 8
    cases: int = 20
    seed: int = 1
    faults: list[Fault] = field(default_factory=list)


def _noise(rng: random.Random) -> float:
    """A multiplicative factor: 1 + N(0, NOISE_SD), truncated at +-NOISE_MAX."""
    return 1.0 + max(-NOISE_MAX, min(NOISE_MAX, rng.gauss(0.0, NOISE_SD)))


def example_cases() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every ok case of the example files (job-level records), and their workload schemas."""
    cases, workloads = [], {}
    for path in sorted(EXAMPLES.glob("*.json")):
        doc = json.loads(path.read_text())
        workloads.update(doc.get("workloads") or {})
        cases += [c for c in doc["cases"] if c.get("status") == "ok" and c.get("throughput")]
    return cases, workloads


def _plan(templates: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` cases cycled from the templates; copy k of a template gets `variant=k`."""
    plan = []
    for index in range(count):
        case = copy.deepcopy(templates[index % len(templates)])
        variant = index // len(templates)
        case["params"] = {**case["params"], "variant": variant}
        workload, _, rest = str(case["id"]).partition("(")
        case["id"] = f"{workload}({rest.split(')@')[0]},variant={variant})@cuda"
        case["device"], case["index"], case["ranks"] = "cuda", index, None
        plan.append(case)
    return plan


def _faults_of(spec: FleetSpec, node: int, slot: int) -> list[Fault]:
    return [f for f in spec.faults if f.node == node and f.slot in (None, slot)]


def _rank_case(case: dict[str, Any], rank: int, rng: random.Random, faults: list[Fault]) -> dict[str, Any]:
    throughput = float(case["throughput"]["median"]) * _noise(rng)
    watts = 650.0 * _noise(rng)
    clock, flags = SM_CLOCK_MHZ * (1.0 + (_noise(rng) - 1.0) / 4), []
    for fault in faults:
        throughput *= fault.throughput
        watts *= fault.power
        if fault.clock_mhz is not None:
            clock = fault.clock_mhz * (1.0 + (_noise(rng) - 1.0) / 4)
        if fault.throttled:
            flags.append(f"throttled:{fault.throttled}")
    seconds = 10.0
    energy = watts * seconds
    return {
        "index": case["index"],
        "id": case["id"].replace("@cuda", f"@cuda:{rank}"),
        "status": "ok",
        "error": None,
        "work_per_iter": case.get("work_per_iter"),
        "seconds_per_iter": (case.get("work_per_iter") or 0.0) / throughput if throughput else None,
        "throughput": throughput,
        "energy_j": energy,
        "avg_watts": watts,
        "efficiency": throughput / watts,
        "peak_memory_bytes": 2**30,
        "energy_source": "nvml_energy",
        "energy_boundary": "device",
        "sm_clock_mhz": clock,
        "mean_temperature_c": TEMPERATURE_C * _noise(rng),
        "max_temperature_c": (TEMPERATURE_C + 6) * _noise(rng),
        "flags": flags,
    }


def _device(node: int, slot: int, faults: list[Fault]) -> dict[str, Any]:
    gen, width, xids = 5, 16, []
    for fault in faults:
        if fault.pcie is not None:
            gen, width = fault.pcie
        xids += list(fault.xid)
    return {
        "id": f"cuda:{slot}",
        "kind": "cuda",
        "name": GPU_NAME,
        "memory_bytes": 80 * 2**30,
        "cache_bytes": 50 * 2**20,
        "multiprocessors": 132,
        "compute_capability": "9.0",
        "uuid": f"GPU-{uuid.UUID(int=(node << 16) + slot + 1, version=4)}",
        "pci_bus_id": f"00000000:{0x18 + 0x10 * slot:02X}:00.0",
        "power_limit_w": 700.0,
        "serial": f"165{node:06d}{slot:02d}",
        "module_id": slot + 1,
        "vbios": "96.00.99.00.01",
        "health": {
            "pcie_gen": gen,
            "pcie_gen_max": 5,
            "pcie_width": width,
            "pcie_width_max": 16,
            "ecc_uncorrected": 0,
            "remapped_rows_pending": False,
            "remapped_rows_failure": False,
            "xid_events": xids,
        },
    }


def node_file(
    spec: FleetSpec, node: int, plan: list[dict[str, Any]], workloads: dict[str, Any], rng: random.Random
) -> dict[str, Any]:
    """The merged run file of node `node`: its job-level cases and each rank's figures."""
    host = f"node-{node:04d}"
    ranks = []
    for slot in range(spec.gpus):
        faults = _faults_of(spec, node, slot)
        ranks.append(
            {
                "rank": slot,
                "local_rank": slot,
                "node_rank": 0,
                "host": host,
                "device": _device(node, slot, faults),
                "threads": 1,
                "status": "complete",
                "cases": [_rank_case(case, slot, rng, faults) for case in plan],
            }
        )
    run_id = uuid.UUID(int=rng.getrandbits(128), version=4).hex
    return {
        "schema": "wattbench.run/2",
        "run": {
            "id": run_id,
            "started_at": f"2026-12-01T{node // 3600 % 24:02d}:{node // 60 % 60:02d}:{node % 60:02d}.000Z",
            "finished_at": "2026-12-01T23:59:59.000Z",
            "wattbench_version": "0.1.0",
            "command": "wattbench run acceptance (synthetic fleet)",
            "status": "complete",
            "settings": {"distributed": {"world_size": spec.gpus, "nodes": 1, "backend": "nccl"}},
            "cases_planned": len(plan),
        },
        "host": {"hostname": host, "os": "Linux", "python": "3.11.7", "torch": TORCH, "cuda": "12.8", "driver": DRIVER},
        "devices": [{"id": "cuda", "kind": "cuda", "name": GPU_NAME, "memory_bytes": 80 * 2**30, "ranks": spec.gpus, "nodes": 1}],
        "cases": plan,
        "workloads": workloads,
        "ranks": ranks,
    }


def write_fleet(out: Path, spec: FleetSpec) -> list[Path]:
    """Write the fleet's node files under `out`; returns their paths."""
    templates, workloads = example_cases()
    plan = _plan(templates, spec.cases)
    rng = random.Random(spec.seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for node in range(spec.nodes):
        path = out / f"node-{node:04d}.json"
        path.write_text(json.dumps(node_file(spec, node, plan, workloads, rng)))
        paths.append(path)
    return paths


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--cases", type=int, default=20)
    args = parser.parse_args(argv)
    paths = write_fleet(args.out, FleetSpec(args.nodes, args.gpus, args.cases))
    print(f"{len(paths)} node files, {args.nodes * args.gpus * args.cases:,} rows, in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
