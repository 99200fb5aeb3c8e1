"""NVIDIA GPUs through NVML (nvidia-ml-py, `import pynvml`)."""
