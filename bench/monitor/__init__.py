"""Power, energy and memory: one module per source, the sampler, and `wattbench monitor`.

base.py (Reading, PowerSource), nvml.py (NVIDIA GPUs; the only module importing pynvml),
rapl.py (CPU package + dram), nominal.py (a user-given wattage, an estimate), process.py
(resident memory), discover.py (which source measures which device), sampler.py (background
thread and measurement windows), command.py (`wattbench monitor -- COMMAND`). Nothing here
imports torch: callers pass device descriptions and a synchronize callback.
"""
