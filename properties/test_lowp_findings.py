"""Findings about fp8 scaling recipes and microscaling, each with a witness.

1. Delayed scaling (amax history) overflows E4M3 on a signal that grows step to step, where
   dynamic per-tensor scaling never does; on a steady signal (the witness) it does not.
2. Per-tensor E4M3 flushes values of a layer whose values span more binades than E4M3
   holds (448 / 2^-9: under 18), where MXFP8's per-block scales keep every one of them; a
   layer spanning 8 binades (the witness) loses nothing per tensor either.
3. An outlier channel (2^16 times the rest) drives the other channels into E4M3's
   subnormals under one per-tensor scale: their median SQNR falls below 15 dB, while a scale
   per row (a channel per row) keeps it at E4M3's 31 dB; without the outlier (the witness)
   per-tensor scaling is as good.
"""

import torch
from witness import assert_fails_on

from stability.core.lowp.formats import get_format
from stability.core.lowp.quantize import quantize
from stability.core.lowp.recipes import AmaxHistory, get_recipe
from stability.core.lowp.sqnr import sqnr_db

E4M3 = get_format("e4m3")
STEPS = 8


def _overflows(growth: float, recipe: str) -> list[int]:
    g = torch.Generator().manual_seed(5)
    history = AmaxHistory(4)
    out = []
    for step in range(STEPS):
        x = torch.randn(4096, generator=g) * growth**step
        q = quantize(x, E4M3, get_recipe(recipe), history=history)
        out.append(int(q.event_counts()[0]))
    return out


def test_delayed_scaling_overflows_a_growing_signal(growth: float = 1.5) -> None:
    assert sum(_overflows(growth, "tensor")) == 0
    delayed = _overflows(growth, "delayed:4")
    assert delayed[0] == 0 and all(n > 0 for n in delayed[1:]), delayed


def test_witness_delayed_scaling_overflows_a_growing_signal() -> None:
    assert_fails_on(1.0, test_delayed_scaling_overflows_a_growing_signal)


def _spanning(binades: int) -> torch.Tensor:
    """64 rows of 32 values, row k at 2^(-k * binades / 63): whole MX blocks per scale."""
    g = torch.Generator().manual_seed(6)
    scales = torch.exp2(-torch.linspace(0, binades, 64)).unsqueeze(1)
    return (torch.rand(64, 32, generator=g) + 1) * scales


def test_per_tensor_flushes_what_mx_blocks_keep(binades: int = 30) -> None:
    x = _spanning(binades)
    flushed = int(quantize(x, E4M3, get_recipe("tensor")).event_counts()[3])
    kept = quantize(x, get_format("mxfp8"), get_recipe("tensor"))
    assert flushed >= 0.1 * x.numel()
    assert int(kept.event_counts()[3]) == 0 and sqnr_db(x, kept.values) > 28


def test_witness_per_tensor_flushes_what_mx_blocks_keep() -> None:
    assert_fails_on(8, test_per_tensor_flushes_what_mx_blocks_keep)


def _median_channel_sqnr(x: torch.Tensor, recipe: str) -> float:
    q = quantize(x, E4M3, get_recipe(recipe)).values
    rest = [sqnr_db(x[c], q[c]) for c in range(1, x.shape[0])]
    return float(torch.tensor(rest).median())


def test_outlier_channel_wrecks_per_tensor_not_per_row(outlier: float = 2.0**16) -> None:
    g = torch.Generator().manual_seed(8)
    x = torch.randn(64, 512, generator=g)  # (channels, tokens): a row per channel
    x[0] *= outlier
    assert _median_channel_sqnr(x, "tensor") < 15
    assert _median_channel_sqnr(x, "row") > 30


def test_witness_outlier_channel_wrecks_per_tensor_not_per_row() -> None:
    assert_fails_on(1.0, test_outlier_channel_wrecks_per_tensor_not_per_row)
