"""The stack's weight-gradient GEMM, rescaled by an exact power of two (core/exact_scale.py).

It must give the plain GEMM's result bit for bit on normal data, keep subnormal gradients
(never flush them) and be at least as accurate as the plain GEMM where they occur, and
never overflow. Each check has its known-bad variant beside it: a factor that is not a
power of two, a flush, a shift that ignores the bounds.
"""

import math
from collections.abc import Callable

import pytest
import torch

from stability.core import exact_scale
from stability.core.exact_scale import MAX_SHIFT, rescaled_bmm, shift_for, weight_gradient

Gemm = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def rescaled(x: torch.Tensor, g: torch.Tensor, bound: float) -> torch.Tensor:
    """The rescaled GEMM itself, whether or not the gradient holds subnormals."""
    return rescaled_bmm(x.transpose(1, 2), g, bound)


def chosen(x: torch.Tensor, g: torch.Tensor, bound: float) -> torch.Tensor:
    """What the stack runs: the rescale where a sample holds subnormals, else plain."""
    return weight_gradient(x, g, lambda: bound)


TINY = torch.finfo(torch.float32).tiny
SUBNORMAL_ULP = 2.0**-149


def plain(x: torch.Tensor, g: torch.Tensor, bound: float) -> torch.Tensor:
    return torch.bmm(x.transpose(1, 2), g)


def by_three(x: torch.Tensor, g: torch.Tensor, bound: float) -> torch.Tensor:
    """Known bad: a rescale by a factor that is not a power of two rounds every product."""
    return torch.bmm(x.transpose(1, 2), g * 3.0) / 3.0


def flushed(x: torch.Tensor, g: torch.Tensor, bound: float) -> torch.Tensor:
    """Known bad: subnormal gradients flushed to zero, as ``set_flush_denormal`` would."""
    return chosen(x, torch.where(g.abs() < TINY, 0.0, g), bound)


def unbounded(x: torch.Tensor, g: torch.Tensor, bound: float) -> torch.Tensor:
    """Known bad: the largest shift whatever the operands hold."""
    return torch.bmm(x.transpose(1, 2), g * 2.0**MAX_SHIFT) * 2.0**-MAX_SHIFT


@pytest.fixture(autouse=True)
def rescale_small_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operands here are small: rescale them as a width-256 stack's would be."""
    monkeypatch.setattr(exact_scale, "RESCALE_FROM", 0)


def normal_operands() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(3, 64, 32, generator=gen) * 7, torch.randn(3, 64, 32, generator=gen)


def subnormal_operands() -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients as a saturated activation leaves them: most of a column far below float32's
    smallest normal, the rest of order one."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 64, 32, generator=gen) + 0.1
    g = torch.randn(2, 64, 32, generator=gen)
    g[:, :, :8] *= 2.0**-135
    assert ((g != 0) & (g.abs() < TINY)).sum() > 500
    return x, g


def check_bit_identical(gemm: Gemm) -> None:
    x, g = normal_operands()
    assert torch.equal(gemm(x, g, float(x.abs().amax())), plain(x, g, 0.0))


def test_on_normal_data_the_rescaled_gemm_is_the_plain_one_bit_for_bit() -> None:
    check_bit_identical(rescaled)


def test_witness_a_factor_that_is_not_a_power_of_two_is_not_exact() -> None:
    with pytest.raises(AssertionError):
        check_bit_identical(by_three)


def check_keeps_subnormals(gemm: Gemm) -> None:
    """No worse than one subnormal step from the float64 product, nowhere zeroed."""
    x, g = subnormal_operands()
    want = torch.bmm(x.double().transpose(1, 2), g.double())
    got = gemm(x, g, float(x.abs().amax())).double()
    assert (got[:, :, :8] != 0).all()
    assert float((got - want).abs()[:, :, :8].max()) <= SUBNORMAL_ULP


def test_subnormal_gradients_are_kept_and_their_products_rounded_once() -> None:
    check_keeps_subnormals(chosen)


def test_witness_flushed_gradients_lose_their_columns() -> None:
    with pytest.raises(AssertionError):
        check_keeps_subnormals(flushed)


def test_witness_the_plain_gemm_rounds_each_subnormal_product() -> None:
    """The plain GEMM rounds every product on the subnormal grid: it is the less accurate."""
    with pytest.raises(AssertionError):
        check_keeps_subnormals(plain)


def check_never_overflows(gemm: Gemm) -> None:
    x, g = normal_operands()
    x, g = x * 1e25, g * 1e10
    got = gemm(x, g, float(x.abs().amax()))
    assert torch.isfinite(got).all()
    assert torch.equal(got, plain(x, g, 0.0))


def test_large_operands_are_not_rescaled_into_overflow() -> None:
    check_never_overflows(rescaled)


def test_witness_a_shift_that_ignores_the_bounds_overflows() -> None:
    with pytest.raises(AssertionError):
        check_never_overflows(unbounded)


@pytest.mark.parametrize(
    ("input_bound", "grad_bound", "terms", "expected"),
    [
        (1.0, 1.0, 256, 92),  # 2**8 terms of |x g| <= 1: the sums reach 2**8
        (1e-30, 1e-30, 64, MAX_SHIFT),  # capped: 2**-MAX_SHIFT must stay a normal float
        (1e20, 1e20, 256, 0),  # no room: the plain GEMM
        (2.0**-100, 2.0**40, 256, 60),  # tiny inputs: the gradient itself must not overflow
        (0.0, 1.0, 256, 0),  # all-zero operands
        (math.inf, 1.0, 256, 0),
        (math.nan, 1.0, 256, 0),
    ],
)
def test_shift_for_keeps_the_rescaled_sums_under_the_headroom(
    input_bound: float, grad_bound: float, terms: int, expected: int
) -> None:
    assert shift_for(input_bound, grad_bound, terms) == expected


def test_gradients_with_non_finite_values_take_the_plain_gemm() -> None:
    x, g = normal_operands()
    g[0, 0, 0] = math.inf
    torch.testing.assert_close(rescaled(x, g, 7.0), plain(x, g, 0.0), equal_nan=True)


def test_gradients_under_the_size_threshold_take_the_plain_gemm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(exact_scale, "RESCALE_FROM", 2**17)
    x, g = subnormal_operands()
    assert g.numel() < exact_scale.RESCALE_FROM
    assert torch.equal(chosen(x, g, float(x.abs().amax())), plain(x, g, 0.0))


def test_the_gradient_autograd_goes_on_to_use_is_left_as_it_was() -> None:
    """The rescale works in place on autograd's own gradient, then undoes it exactly."""
    x, g = subnormal_operands()
    before = g.clone()
    rescaled(x, g, float(x.abs().amax()))
    assert torch.equal(g, before)


def test_tiny_inputs_with_large_gradients_stay_finite() -> None:
    x, g = normal_operands()
    x, g = x * 2.0**-100, g * 2.0**40
    got = rescaled(x, g, float(x.abs().amax()))
    assert torch.isfinite(got).all()
    assert torch.equal(got, plain(x, g, 0.0))


def test_normal_gradients_are_not_rescaled() -> None:
    """No subnormal in the sample: the plain GEMM, and the bound is never asked for."""
    x, g = normal_operands()
    asked: list[int] = []
    got = weight_gradient(x, g, lambda: asked.append(1) or 1.0)
    assert torch.equal(got, plain(x, g, 0.0)) and not asked


def test_subnormal_gradients_are_found_by_the_sample() -> None:
    x, g = subnormal_operands()
    asked: list[int] = []
    weight_gradient(x, g, lambda: asked.append(1) or float(x.abs().amax()))
    assert asked
