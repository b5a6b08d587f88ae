"""A stacked layer's tensor is let go exactly when ``finish_moments`` will not read it again.

``rereads`` decides at once, from the layer's raw moments, whether the deferred finish will
need the tensor (an unsafe one-pass variance, a non-finite sum); a tensor it lets go is
memory the stack never holds. Both directions are checked: where it says no, finishing
without the tensor gives the same bits; where it says yes, finishing without it fails.
"""

import pytest
import torch

from stability.core.stacked_stats import (
    KEEP_BELOW,
    finish_moments,
    keep_for_finish,
    raw_moments,
    rereads,
)

N = 4096


def _rows(kind: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, N, generator=gen)
    if kind == "offset":  # mean^2 far above the variance: one pass cancels, two passes needed
        x[1] += 1000.0
    elif kind == "inf":
        x[2, 7] = float("inf")
    elif kind == "nan":
        x[0, 3] = float("nan")
    elif kind == "huge":  # the sum of squares overflows float32
        x[1] *= 1e20
    elif kind == "zeros":
        x.zero_()
    return x


@pytest.mark.parametrize("kind", ["normal", "offset", "inf", "nan", "huge", "zeros"])
@pytest.mark.parametrize("extremes", [False, True])
def test_a_tensor_is_let_go_only_where_the_finish_will_not_read_it(
    kind: str, extremes: bool
) -> None:
    flat = _rows(kind)
    raw = raw_moments(flat, extremes)
    kept = finish_moments(raw.unsqueeze(0), [flat], N)
    if rereads(raw, flat):
        with pytest.raises(AssertionError, match="needed again"):
            finish_moments(raw.unsqueeze(0), [None], N)
    else:
        let_go = finish_moments(raw.unsqueeze(0), [None], N)
        assert torch.equal(let_go.nan_to_num(-1.0), kept.nan_to_num(-1.0))


@pytest.mark.parametrize("kind", ["offset", "inf", "nan", "huge"])
def test_witness_rows_that_need_a_second_pass_are_kept(kind: str) -> None:
    flat = _rows(kind)
    assert rereads(raw_moments(flat, extremes=False), flat)


def test_ordinary_rows_are_let_go() -> None:
    flat = _rows("normal")
    assert not rereads(raw_moments(flat, extremes=True), flat)


def test_small_layers_are_kept_without_asking_and_large_ones_as_rereads_says() -> None:
    """``keep_for_finish``: under ``KEEP_BELOW`` bytes always kept (the finish of a kept
    tensor that needs no reread is the same bits); above it, exactly ``rereads``."""
    small = _rows("normal")
    assert small.numel() * small.element_size() < KEEP_BELOW
    raw = raw_moments(small, extremes=True)
    assert keep_for_finish(raw, small) and not rereads(raw, small)
    gen = torch.Generator().manual_seed(1)
    large = torch.randn(8, KEEP_BELOW // 16, generator=gen)  # 2 x KEEP_BELOW bytes
    offset = large.clone()
    offset[2] += 1000.0
    for flat in (large, offset):
        raw = raw_moments(flat, extremes=False)
        assert keep_for_finish(raw, flat) == rereads(raw, flat)
    assert not keep_for_finish(raw_moments(large, extremes=False), large)  # the witness
    assert keep_for_finish(raw_moments(offset, extremes=False), offset)
