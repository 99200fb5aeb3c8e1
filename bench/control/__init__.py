"""Operating points: setting a GPU's power limit and locked clocks for a sweep, and putting them
back on every way out (normal end, a failed case, Ctrl-C, SIGTERM, kill -9).

- points.py: what the user asked for (`--power-limit`, `--gpu-clocks`), parsed and named.
- restore.py: restore records on disk, written before the first change; restoring from them;
  honouring records a dead run left behind; the watchdog process that restores when the
  sweeping process dies.
- controller.py: the sweep's controller: permission and range checks up front, then apply and
  restore.

No torch and no vendor library here: the controls go through the device layer (bench.device,
NVML for NVIDIA), so the watchdog and `wattbench restore` start fast.
"""
