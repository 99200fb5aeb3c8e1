"""wattbench: throughput and energy of AI workloads on accelerators and CPUs."""

__version__ = "0.1.0"
