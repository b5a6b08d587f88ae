"""The same-run GEMM: the yardstick every throughput number is divided by.

Throughput on a shared machine moves by tens of percent between runs, so each number is
paired with a GEMM of the step's own shapes timed in the same process, interleaved with it
round by round (``stability.measure.interleave``): ``efficiency = gflops / calib_gflops``
is what stays comparable across runs and machines.
"""

import torch


class Gemm:
    """``(batch, width) @ (width, width)`` into a preallocated output: the step's matmul."""

    def __init__(self, batch: int, width: int, dtype: torch.dtype, device: str) -> None:
        gen = torch.Generator().manual_seed(0)
        self.device = device
        self.x = torch.randn(batch, width, generator=gen).to(device=device, dtype=dtype)
        self.w = torch.randn(width, width, generator=gen).to(device=device, dtype=dtype)
        self.out = torch.empty(batch, width, device=device, dtype=dtype)
        self.flops = 2 * batch * width * width

    def __call__(self) -> None:
        torch.mm(self.x, self.w, out=self.out)
