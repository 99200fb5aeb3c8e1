"""A deliberately slowed workload: a real regression to check that the gate catches one.

Used by tests/test_compare.py and benchmarks/gate_noise.py. It lives in tests/ with the other
test doubles and is never registered by wattbench itself.
"""

from __future__ import annotations

import torch

from workloads.matmul import MatMul


class SlowedMatMul(MatMul):
    """The same matmul with a quarter more real work every iteration (an extra m x k/4 x n
    product): its throughput, counted as the plain matmul's 2mnk FLOP, drops by about 20%."""

    def setup(self) -> None:
        super().setup()
        k = self.p["k"]
        self.extra_a = self.a[0][:, : k // 4].contiguous()
        self.extra_b = self.b[0][: k // 4].contiguous()
        self.extra_c = torch.empty_like(self.c)

    def run(self) -> None:
        super().run()
        torch.matmul(self.extra_a, self.extra_b, out=self.extra_c)
