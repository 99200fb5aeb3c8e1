"""Power, energy and memory: one module per source, the sampler, and `wattbench monitor`.

base.py (Reading, PowerSource), rapl.py (CPU package + dram), nominal.py (a user-given wattage,
an estimate), process.py (resident memory), discover.py (which source measures which device),
sampler.py (background thread and measurement windows), command.py (`wattbench monitor --
COMMAND`). A GPU's source comes from its vendor in the device layer (bench/device/; NVIDIA's is
NvmlSource in bench/device/nvidia/telemetry.py): nothing here imports a vendor library, nor
torch: callers pass device descriptions and a synchronize callback.
"""
