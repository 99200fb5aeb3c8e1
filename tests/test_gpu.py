"""Checks that need a CUDA GPU (skipped without one; `make gpu-check` runs them)."""

import pytest
import torch

from bench.measure.hardware import cuda_devices, resolve_devices
from bench.measure.plan import expand
from bench.measure.runner import run_case
from bench.measure.timing import CpuTimer, CudaTimer, synchronize
from workloads import get

pytestmark = pytest.mark.gpu


@pytest.fixture
def gpu():
    return cuda_devices()[0]


def _run(gpu, timing, workload, **params):
    (case,) = expand(workload, {k: [v] for k, v in params.items()}, [gpu])
    return run_case(case, gpu, timing, get(workload))


def test_gpu_is_discovered_with_identity(gpu):
    assert gpu.id == "cuda:0" and gpu.kind == "cuda"
    assert gpu.memory_bytes > 0 and gpu.multiprocessors > 0 and gpu.cache_bytes > 0
    assert gpu.compute_capability
    assert resolve_devices(None)[0].id == "cuda:0"  # the best device is the GPU


def test_cuda_timer_agrees_with_host_clock_on_long_work(gpu):
    a = torch.randn(4096, 4096, device=gpu.torch_device)
    fn = lambda: a @ a  # noqa: E731

    def synced():
        fn()
        synchronize(gpu)

    CpuTimer().time(synced, 50)  # clocks up from idle before either is timed
    device_s, host_s = [], []
    for _ in range(3):  # alternate, so clock drift falls on both
        device_s.append(CudaTimer(gpu.torch_device).time(fn, 20))
        host_s.append(CpuTimer().time(synced, 20))
    assert min(device_s) > 0
    assert sorted(device_s)[1] == pytest.approx(sorted(host_s)[1], rel=0.25)


@pytest.mark.parametrize("dtype", ["float32", "tf32", "bfloat16", "float16", "float8"])
def test_matmul_dtypes(gpu, fast_timing, dtype):
    result = _run(gpu, fast_timing, "matmul", size=1024, dtype=dtype)
    if gpu.rocm:  # AMD: tf32 is not measured; float8 on MI300 (gfx942, e4m3fnuz) and MI350 (gfx950)
        lacks = dtype == "tf32" or (dtype == "float8" and not str(gpu.arch).startswith(("gfx94", "gfx95")))
    else:
        lacks = dtype == "float8" and tuple(int(x) for x in gpu.compute_capability.split(".")) < (8, 9)
    if lacks:
        assert result["status"] == "skipped"
        return
    assert result["status"] == "ok", result["error"]
    assert result["memory"]["source"] == "torch.cuda.max_memory_allocated"


def test_small_matmul_rotates_inputs_past_l2(gpu):
    from workloads.matmul import MatMul

    (case,) = expand("matmul", {"size": [256], "dtype": ["bfloat16"]}, [gpu])
    workload = MatMul(case.param_dict, gpu)
    workload.setup()
    per_set = 3 * 256 * 256 * 2
    assert len(workload.a) * per_set >= 2 * gpu.cache_bytes or len(workload.a) == 64


@pytest.mark.parametrize("backend", ["auto", "flash", "efficient", "cudnn", "math"])
@pytest.mark.parametrize("pass_", ["forward", "forward+backward"])
def test_attention_backends(gpu, fast_timing, backend, pass_):
    result = _run(
        gpu,
        fast_timing,
        "attention",
        batch=2,
        heads=8,
        seq=1024,
        head_dim=128,
        dtype="bfloat16",
        backend=backend,
        causal=True,
        **{"pass": pass_},
    )
    assert result["status"] in ("ok", "skipped"), result["error"]
    if backend in ("auto", "flash", "math"):
        assert result["status"] == "ok", result["error"]


@pytest.mark.parametrize("op", ["copy", "scale", "add", "triad", "dot", "h2d", "d2h", "d2d"])
def test_membw_ops(gpu, fast_timing, op):
    result = _run(gpu, fast_timing, "membw", op=op, size="64MiB")
    assert result["status"] == "ok", result["error"]
    assert result["throughput"]["median"] > 1e9  # more than 1 GB/s on any GPU


def test_energy_counter_and_power_integral_agree_on_long_window(gpu):
    """On a matmul window of 10 s or more, the energy counter (NVML's, AMD SMI's) and the integral
    of the sampled power agree within 3% (NVIDIA: the instantaneous power, not the 1 s average)."""
    from bench.measure.timing import TimingConfig
    from bench.monitor.discover import DeviceRef, discover
    from bench.monitor.sampler import DEFAULT_INTERVAL_S, Monitor

    found = discover([DeviceRef(gpu.id, gpu.kind, gpu.uuid)])
    if not found.sources:
        pytest.skip(f"no power source: {found.status[gpu.id]}")
    source = found.sources[0]
    instant = source.power_source in ("nvml_power_instant", "amdsmi_power")
    if source.counter_source is None or not instant:
        pytest.skip(f"needs both the energy counter and instantaneous power: {found.status[gpu.id]}")
    (case,) = expand("matmul", {"size": [8192], "dtype": ["bfloat16"]}, [gpu])
    timing = TimingConfig(min_time_s=10.0, repeats=10, repeat_time_s=0.1, warmup_max_s=3.0)
    with Monitor(found.sources, DEFAULT_INTERVAL_S) as monitor:
        result = run_case(case, gpu, timing, get("matmul"), monitor)
    assert result["status"] == "ok", result["error"]
    energy = result["energy"]
    assert energy["duration_s"] >= 0.95 * timing.min_time_s  # repeats are sized from the warm-up's estimate
    assert energy["source"] == source.counter_source
    assert energy["mismatch"] < 0.03, energy
    assert "window_too_short" not in result["flags"]
    assert result["efficiency"] > 0


def test_matmul_peak_memory_is_what_the_timed_window_holds(gpu, fast_timing):
    """A, B and C of each rotation set (3 x 8192² x 2 bytes = 384 MiB for one), not set-up's
    fp32 staging copies or the check's float64 reference (about 900 MiB in all)."""
    from workloads.matmul import rotation_count

    n, element = 8192, 2
    sets = rotation_count(gpu, 3 * n * n * element)  # the bytes per set MatMul.setup uses for bf16
    held = sets * 2 * n * n * element + n * n * element  # A and B per set, one C
    result = _run(gpu, fast_timing, "matmul", size=n, dtype="bfloat16")
    assert result["status"] == "ok", result["error"]
    memory = result["memory"]
    assert memory["scope"] == "timed window"
    assert held <= memory["peak_bytes"] <= held + 96 * 2**20, memory  # room for cuBLAS workspaces


def test_small_matmul_is_flagged_launch_bound_and_large_is_not(gpu, fast_timing):
    # 128: a kernel of a few microseconds on any Hopper; 256 sits near the host's launch cost
    # (gpu-check reports its ratio for information).
    small = _run(gpu, fast_timing, "matmul", size=128, dtype="bfloat16")
    large = _run(gpu, fast_timing, "matmul", size=8192, dtype="bfloat16")
    assert small["status"] == large["status"] == "ok", (small["error"], large["error"])
    assert "launch_bound" in small["flags"], small["timing"]
    assert "launch_bound" not in large["flags"] and large["timing"]["enqueue_ratio"] < 0.5, large["timing"]


def test_graph_matmul_verifies_and_measures_the_gpu_not_the_launches(gpu, fast_timing):
    eager = _run(gpu, fast_timing, "matmul", size=256, dtype="bfloat16")
    graphed = _run(gpu, fast_timing, "matmul", size=256, dtype="bfloat16", graph=True)
    assert graphed["status"] == "ok", graphed["error"]
    assert graphed["id"].endswith(",graph=true)@cuda:0") and graphed["verify"]["passed"]
    assert "launch_bound" not in graphed["flags"], graphed["timing"]
    assert graphed["throughput"]["median"] > eager["throughput"]["median"]  # FLOP/s: a replay is every input set


def test_membw_d2d_copies_within_the_selected_gpu(gpu, fast_timing):
    result = _run(gpu, fast_timing, "membw", op="d2d", size="256MiB")
    assert result["status"] == "ok", result["error"]
    assert result["id"] == "membw(op=d2d,size=256MiB,dtype=float32)@cuda:0"  # no peer: one GPU only
    assert result["work_per_iter"] == 256 * 2**20  # bytes counted once (nvbandwidth)
    assert result["throughput"]["median"] > 1e10, result["throughput"]  # a local copy: far past any PCIe link
    print(f"d2d 256MiB on {gpu.name}: {result['throughput']['median'] / 1e9:.0f} GB/s (bytes counted once)")


def test_membw_p2p_copies_to_its_named_peer_or_says_why_not(gpu, fast_timing):
    result = _run(gpu, fast_timing, "membw", op="p2p", size="256MiB", peer="cuda:1")
    assert result["id"] == "membw(op=p2p,size=256MiB,dtype=float32,peer=cuda:1)@cuda:0"
    count = torch.cuda.device_count()
    if count < 2:
        assert result["status"] == "skipped"
        assert result["error"] == f"p2p peer cuda:1 is not visible here ({count} GPU(s) visible)"
    elif not torch.cuda.can_device_access_peer(0, 1):
        assert result["status"] == "skipped" and "cannot access cuda:1 directly" in result["error"]
    else:
        assert result["status"] == "ok", result["error"]
        assert result["throughput"]["median"] > 1e9


@pytest.mark.parametrize("pass_", ["forward", "forward+backward"])
def test_attention_records_the_kernel_that_ran(gpu, fast_timing, pass_):
    from tests.test_attention_backend import dispatched_backend

    shape = dict(batch=2, heads=8, seq=1024, head_dim=128)
    result = _run(gpu, fast_timing, "attention", **shape, dtype="bfloat16", **{"pass": pass_})
    assert result["status"] == "ok", result["error"]
    ran = result["details"]["backend"]
    q = torch.randn(*shape.values(), device=gpu.torch_device, dtype=torch.bfloat16).requires_grad_(pass_ != "forward")
    assert ran == dispatched_backend(q, q, q, causal=False), result["details"]
    print(f"attention backend=auto {pass_} on {gpu.name}: ran {ran} ({result['details']})")


@pytest.mark.parametrize("phase", ["prefill", "decode", "train"])
def test_llm_tiny_runs_and_verifies_on_the_gpu(gpu, fast_timing, phase):
    """Every llm case used to fail its check on CUDA (the float64 reference mixed devices)."""
    result = _run(gpu, fast_timing, "llm", model="tiny", phase=phase)
    assert result["status"] == "ok", result["error"]
    assert result["verify"]["passed"] and result["params"]["dtype"] == "bfloat16"


def test_llm_moe_slice_runs_and_verifies_on_the_gpu(gpu, fast_timing):
    result = _run(gpu, fast_timing, "llm", model="mixtral-8x7b", phase="decode", run_layers=1, seq=256)
    assert result["status"] == "ok", result["error"]


def test_llm_graph_replay_matches_eager_and_its_pool_is_counted(gpu, fast_timing):
    """A graphed decode verifies against an eager forward, and its memory record counts the
    graph's private pool: eager and graphed peaks of one case are then within 25% of each other
    (the graphed one holds the activations the pool keeps reserved)."""
    params = dict(model="llama-3-8b", phase="decode", run_layers=2, batch=8, seq=1024)
    eager = _run(gpu, fast_timing, "llm", **params)
    graphed = _run(gpu, fast_timing, "llm", **params, graph=True)
    assert eager["status"] == graphed["status"] == "ok", (eager["error"], graphed["error"])
    memory = graphed["memory"]
    assert memory["graph_pool"]["reserved_bytes"] > 0, memory
    assert memory["peak_bytes"] >= memory["allocated_peak_bytes"]
    print(
        f"decode bs8 2 layers: eager peak {eager['memory']['peak_bytes'] / 2**20:.0f} MiB, graphed "
        f"{memory['peak_bytes'] / 2**20:.0f} MiB (allocated {memory['allocated_peak_bytes'] / 2**20:.0f}, pool reserved "
        f"{memory['graph_pool']['reserved_bytes'] / 2**20:.0f}, in use {memory['graph_pool']['allocated_bytes'] / 2**20:.0f})"
    )
    assert memory["peak_bytes"] == pytest.approx(eager["memory"]["peak_bytes"], rel=0.25)


@pytest.mark.parametrize("phase", ["prefill", "decode", "train"])
def test_llm_kernels_per_iteration_against_the_profiler(gpu, phase):
    """launches_per_iter (fitted to aten ops on fake tensors) against the kernels the profiler
    sees in one eager iteration: within a factor of 1.6 either way (fused attention and cuBLAS
    may launch more than one kernel for one op)."""
    from torch.profiler import ProfilerActivity, profile

    from workloads.llm import LLM

    workload = LLM(LLM.resolve({"model": "llama-3-8b", "phase": phase, "run_layers": 2, "seq": 512}, gpu), gpu)
    workload.setup()
    try:
        workload.run()
        synchronize(gpu)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            workload.run()
            synchronize(gpu)
        kernels = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    finally:
        workload.teardown()
    print(f"llm llama-3-8b 2 layers {phase}: {kernels} kernels profiled, launches_per_iter {workload.launches_per_iter}")
    assert workload.launches_per_iter / 1.6 <= kernels <= workload.launches_per_iter * 1.6


@pytest.mark.parametrize("params", [dict(phase="train", run_layers=2, seq=1024), dict(phase="decode", run_layers=2, seq=4096)])
def test_llm_memory_estimate_bounds_the_measured_peak(gpu, fast_timing, params):
    """The estimate against the allocator's peak over the case's whole life (set-up, check,
    iterations): never below it, at most 35% above (allocator rounding and workspaces aside)."""
    from workloads.llm import LLM, memory_estimate

    resolved = LLM.resolve({"model": "llama-3-8b", **params}, gpu)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(gpu.torch_device)
    base = torch.cuda.memory_allocated(gpu.torch_device)
    workload = LLM(resolved, gpu)
    workload.setup()
    try:
        workload.run()
        assert workload.verify().passed
        workload.run()
        synchronize(gpu)
        peak = torch.cuda.max_memory_allocated(gpu.torch_device) - base
    finally:
        workload.teardown()
    from bench.measure import runtime

    fused = runtime.current().fused_attention(
        gpu.torch_device, resolved["heads"], resolved["kv_heads"], resolved["head_dim"], torch.float32
    )
    estimate = memory_estimate(resolved, True, fused)
    print(
        f"llama-3-8b {params}: peak {peak / 2**30:.2f} GiB, estimate {estimate.peak_bytes / 2**30:.2f} GiB "
        f"({ {k: round(v / 2**30, 2) for k, v in {**estimate.resident, **estimate.transient}.items()} })"
    )
    assert peak <= estimate.peak_bytes <= 1.35 * peak + 2**28
