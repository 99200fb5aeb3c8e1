# wattbench: `make run` and `make test` do all the set-up they need on a fresh machine.
#
# .venv holds the package and its dependencies. Without an NVIDIA GPU the set-up installs the CPU
# build of torch first (pinned: an unpinned torch pulls a CUDA build of several GB).
# `make gpu-check` installs nothing: it uses the python3 it finds with this checkout on PYTHONPATH,
# so it works on an offline GPU machine whose python3 already has the dependencies.

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
CPU_TORCH ?= torch==2.13.0
RESULTS ?= results
GPU_OUT ?= $(RESULTS)/gpu
ARGS ?=

.PHONY: run test lint format bench gpu-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing torch with CUDA"; \
	else \
		echo "no NVIDIA GPU: installing the CPU build of torch ($(CPU_TORCH))"; \
		$(VPY) -m pip install --quiet "$(CPU_TORCH)"; \
	fi
	$(VPY) -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/wattbench run $(ARGS)

# The node-power tests' BMC clients (tests/test_node_power.py): pyghmi for IPMI, DMTF's redfish for
# Redfish. Installed apart from the test extra, so that a failed install makes those tests skip with
# the reason rather than stopping the set-up.
$(VENV)/.node-installed: $(VENV)/.installed
	$(VPY) -m pip install --quiet "pyghmi==1.6.19" "redfish==3.4.2" \
		|| echo "could not install pyghmi and redfish: the node-power tests skip"
	touch $@

test: lint $(VENV)/.node-installed
	$(VPY) -m pytest -q -m "not slow"

# ruff (pyflakes, bugbear, import order, pyupgrade) over the code and its tests; mypy over the
# package (configured in pyproject.toml); then the structure checks of tools/ (standard library,
# read through ast): no import cycle between first-party modules, no function over 80 lines.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check bench workloads tests benchmarks tools
	$(VENV)/bin/mypy
	$(VPY) -m tools.check_imports
	$(VPY) -m tools.check_functions

# ruff's formatter over the same files (line length from pyproject.toml).
format: $(VENV)/.installed
	$(VENV)/bin/ruff format bench workloads tests benchmarks tools

bench: $(VENV)/.installed
	$(VPY) benchmarks/harness_overhead.py
	$(VPY) benchmarks/stream_compare.py
	$(VPY) benchmarks/monitor_overhead.py
	$(VPY) benchmarks/monitor_cost.py
	$(VPY) benchmarks/report_speed.py
	$(VPY) benchmarks/llm_roofline.py
	$(VPY) benchmarks/gate_noise.py
	$(VPY) benchmarks/fleet_store.py

# Last, one GPU through torchrun (nccl, world size 1: the collective is skipped with its reason)
# against a plain run of the same matmul: compare must match hardware and cases and exit 0.
# The quick suite runs in one process (a CUDA context per case would add minutes); the long
# matmul runs isolated (the default on a GPU), so the worker path is proven on the device too.
# First, bench/preflight.py names in one line any dependency this python3 cannot import.
gpu-check:
	PYTHONPATH=$(CURDIR) $(PYTHON) -m bench.preflight
	mkdir -p $(GPU_OUT)
	PYTHONPATH=$(CURDIR) $(PYTHON) -m pytest -q -rP -m gpu tests/test_gpu.py
	PYTHONPATH=$(CURDIR) $(PYTHON) -m bench info
	PYTHONPATH=$(CURDIR) $(PYTHON) -m bench run quick --device cuda --no-isolate --out $(GPU_OUT)
	PYTHONPATH=$(CURDIR) $(PYTHON) -m bench run matmul -p size=8192 -p dtype=bfloat16 --min-time 10 --device cuda --out $(GPU_OUT)
	PYTHONPATH=$(CURDIR) $(PYTHON) -m bench run llm -p model=llama-3-8b -p phase=decode -p batch=1,64 -p seq=1024 -p graph=false,true --device cuda --no-isolate --out $(GPU_OUT)
	PYTHONPATH=$(CURDIR) $(PYTHON) -m bench run llm -p model=llama-3-8b -p phase=prefill -p seq=2048 --device cuda --no-isolate --out $(GPU_OUT)
	PYTHONPATH=$(CURDIR) $(PYTHON) -m bench run matmul -p size=128,256 -p dtype=bfloat16 -p graph=false,true --min-time 1 --device cuda --no-isolate --out $(GPU_OUT)
	PYTHONPATH=$(CURDIR) $(PYTHON) -m torch.distributed.run --standalone --nproc-per-node 1 --max-restarts 0 -m bench run matmul collective -p size=4096 -p dtype=bfloat16 --min-time 2 --device cuda --out $(GPU_OUT)/torchrun
	PYTHONPATH=$(CURDIR) $(PYTHON) -m bench run matmul -p size=4096 -p dtype=bfloat16 --min-time 2 --device cuda --no-isolate --out $(GPU_OUT)/plain
	PYTHONPATH=$(CURDIR) $(PYTHON) -m bench compare $(GPU_OUT)/plain $(GPU_OUT)/torchrun

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
