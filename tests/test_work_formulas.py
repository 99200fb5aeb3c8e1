"""Work accounting: exact FLOP and byte counts per iteration (DESIGN.md, decimal units)."""

import pytest

from bench.measure.plan import expand
from workloads import get
from workloads.attention import attention_flop


def _work(cpu, workload: str, **params):
    (case,) = expand(workload, {k: [v] for k, v in params.items()}, [cpu])
    return get(workload)(case.param_dict, cpu).work()


def test_matmul_flop_is_2mnk(cpu):
    work = _work(cpu, "matmul", m=128, n=64, k=32, dtype="float32")
    assert work.unit == "FLOP"
    assert work.per_iter == 2 * 128 * 64 * 32 == 524288


def test_matmul_size_sets_m_n_k(cpu):
    assert _work(cpu, "matmul", size=100).per_iter == 2_000_000


@pytest.mark.parametrize(
    "causal, backward, expected",
    [
        (False, False, 4 * 2 * 3 * 128 * 128 * 64),
        (True, False, 4 * 2 * 3 * 128 * 128 * 64 / 2),
        (False, True, 4 * 2 * 3 * 128 * 128 * 64 * 3.5),
        (True, True, 4 * 2 * 3 * 128 * 128 * 64 / 2 * 3.5),
    ],
)
def test_attention_flop(causal, backward, expected):
    assert attention_flop(2, 3, 128, 128, 64, causal, backward) == expected


def test_attention_workload_uses_formula(cpu):
    work = _work(cpu, "attention", batch=2, heads=3, seq=128, head_dim=64, causal=True, **{"pass": "forward+backward"})
    assert work.per_iter == 4 * 2 * 3 * 128 * 128 * 64 / 2 * 3.5 == 44040192.0


@pytest.mark.parametrize(
    "op, arrays", [("copy", 2), ("scale", 2), ("add", 3), ("triad", 3), ("dot", 2), ("h2d", 1), ("d2h", 1), ("d2d", 1)]
)
def test_membw_bytes_babelstream_and_copies(cpu, op, arrays):
    work = _work(cpu, "membw", op=op, size="1MiB")
    assert work.unit == "byte"
    assert work.per_iter == arrays * 1024 * 1024


def test_llc_sums_cache_instances(tmp_path):
    """Two CCDs with 32 MiB of L3 each: 64 MiB in all, not cpu0's 32 MiB."""
    from bench.measure.hardware import _cpu_llc_bytes

    for cpu, shared in ((0, "0-7"), (1, "0-7"), (8, "8-15")):
        for index, (level, size, kind) in enumerate(
            ((1, "32K", "Data"), (1, "32K", "Instruction"), (2, "1024K", "Unified"), (3, "32768K", "Unified"))
        ):
            d = tmp_path / f"cpu{cpu}" / "cache" / f"index{index}"
            d.mkdir(parents=True)
            (d / "level").write_text(f"{level}\n")
            (d / "size").write_text(f"{size}\n")
            (d / "type").write_text(f"{kind}\n")
            (d / "shared_cpu_list").write_text(f"{shared if level == 3 else cpu}\n")
    assert _cpu_llc_bytes(tmp_path) == 64 * 2**20
    assert _cpu_llc_bytes(tmp_path / "none") is None
