"""Power, energy and memory sources. One module per source; only `nvml.py` imports pynvml.

In this version the NVIDIA module provides device identity (driver, UUID, power limit) for
`wattbench info` and the result file; energy windows and the background sampler plug in here.
"""
