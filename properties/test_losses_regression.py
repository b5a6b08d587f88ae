"""Losses for regression: L2, L1 and Huber, their gradients and torch's own versions.

The notes: L2's gradient is the residual, L1's is a constant size far from the target (and
a subgradient at 0), Huber stitches the two so there is no kink at |r| = delta. Closed forms
live in ``stability.notes.losses``; here autograd and torch's losses are held against them.
"""

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from loss_helpers import Loss, autograd, close64
from strategies import float_tensors
from witness import assert_fails_on

from stability.notes.losses import (
    huber_grad,
    huber_loss,
    l1_grad,
    l1_loss,
    l2_grad,
    l2_loss,
)

CHAPTER = "Softmax regression and losses"

# --- L2, L1, Huber gradients ---------------------------------------------------------------


@st.composite
def _predictions_and_targets(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    n = draw(st.integers(min_value=1, max_value=12))
    return draw(float_tensors(shape=(n,))), draw(float_tensors(shape=(n,)))


def _grad_matches(loss: Loss, grad: Loss, y_hat: torch.Tensor, y: torch.Tensor) -> bool:
    return close64(autograd(lambda p: loss(p, y), y_hat), grad(y_hat, y))


def check_grad(loss: Loss, grad: Loss, y_hat: torch.Tensor, y: torch.Tensor) -> None:
    """``grad`` is the gradient of ``loss`` w.r.t. y_hat (autograd, float64)."""
    assert _grad_matches(loss, grad, y_hat, y), "closed-form gradient != autograd"


def mse_per_element(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Known-bad as the L2 loss: torch's MSE has no 1/2, so its gradient is 2 (y_hat - y)."""
    return F.mse_loss(y_hat, y, reduction="none")


def sign_by_division(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Known-bad L1 gradient: r / |r| is nan at a zero residual (autograd: subgradient 0)."""
    return (y_hat - y) / (y_hat - y).abs()


@given(_predictions_and_targets())
def test_l2_grad(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    y_hat, y = case
    check_grad(l2_loss, l2_grad, y_hat, y)
    # torch's MSE has no 1/2: twice l2 per element.
    assert close64(mse_per_element(y_hat, y), 2 * l2_loss(y_hat, y))


def test_witness_l2_grad() -> None:
    # MSE's gradient is 2 (y_hat - y), not the residual: the 1/2 matters.
    y_hat, y = torch.tensor([1.0, -2.0]).double(), torch.tensor([0.0, 1.0]).double()
    assert_fails_on(mse_per_element, check_grad, l2_grad, y_hat, y)


@given(_predictions_and_targets())
def test_l1_grad(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    y_hat, y = case
    check_grad(l1_loss, l1_grad, y_hat, y)
    assert close64(F.l1_loss(y_hat, y, reduction="none"), l1_loss(y_hat, y))
    # Far from the target the gradient has constant size 1, whatever the residual.
    g = l1_grad(y_hat, y)
    assert bool((g[y_hat != y].abs() == 1).all())


def test_witness_l1_grad() -> None:
    # The hand-written r / |r| is nan at a zero residual, where autograd uses the subgradient 0.
    y_hat, y = torch.tensor([1.0, 2.0]).double(), torch.tensor([0.0, 2.0]).double()
    assert_fails_on(sign_by_division, lambda grad: check_grad(l1_loss, grad, y_hat, y))


deltas = st.floats(min_value=0.1, max_value=10.0)


HuberLike = Callable[[torch.Tensor, float], torch.Tensor]  # (residual, delta) -> per element


def check_huber_grad(grad: HuberLike, r: torch.Tensor, delta: float) -> None:
    got = autograd(lambda x: huber_loss(x, delta), r)
    assert close64(got, grad(r, delta)), f"Huber's autograd != closed form at delta {delta}"


def unclipped(r: torch.Tensor, delta: float) -> torch.Tensor:
    """Known-bad Huber gradient: the L2 gradient scaled by 1/delta, never clipped."""
    return r / delta


@given(float_tensors(shape=(12,)), deltas)
def test_huber_grad(r: torch.Tensor, delta: float) -> None:
    # The gradient is the residual clipped to [-1, 1] after scaling by 1/delta.
    check_huber_grad(huber_grad, r, delta)
    assert bool((huber_grad(r, delta).abs() <= 1).all())


def test_witness_huber_grad() -> None:
    # The unclipped residual is wrong outside |r| <= delta.
    r = torch.tensor([-5.0, 0.5, 3.0], dtype=torch.float64)
    assert_fails_on(unclipped, check_huber_grad, r, 1.0)


HUBER_STEP = 1e-7  # relative distance either side of |r| = delta


def _continuous_at_delta(loss: HuberLike, d: float) -> bool:
    """Value and slope just inside and outside |r| = delta agree to O(step)."""
    h = HUBER_STEP * d
    inside = torch.tensor([d - h, -(d - h)], dtype=torch.float64)
    outside = torch.tensor([d + h, -(d + h)], dtype=torch.float64)
    # Both slopes have size <= 1 near delta and the quadratic's changes by h/delta: 4h is ample.
    values = (loss(outside, d) - loss(inside, d)).abs() <= 4 * h
    g_in = autograd(lambda x: loss(x, d), inside)
    g_out = autograd(lambda x: loss(x, d), outside)
    slopes = (g_out - g_in).abs() <= 4 * HUBER_STEP
    return bool(values.all() and slopes.all())


@pytest.mark.parametrize("loss", [pytest.param(huber_loss, id="huber_loss")])
@given(delta=deltas)
def test_huber_continuous_at_delta(loss: HuberLike, delta: float) -> None:
    assert _continuous_at_delta(loss, delta)


def _stitched_without_offset(r: torch.Tensor, delta: float) -> torch.Tensor:
    """Known-bad Huber: L1 outside, quadratic inside, but no -delta/2: jumps by delta/2."""
    return torch.where(r.abs() > delta, r.abs(), r**2 / (2 * delta))


def test_witness_huber_continuous_at_delta() -> None:
    # It jumps by delta/2 at every delta the property draws.
    assert_fails_on(_stitched_without_offset, test_huber_continuous_at_delta)


def _matches_torch(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    return close64(ours, theirs)


def check_is_huber_loss(ours: HuberLike, r: torch.Tensor, delta: float) -> None:
    """``ours(r, delta)`` equals torch's ``HuberLoss(delta)`` per element."""
    huber = F.huber_loss(r, torch.zeros_like(r), reduction="none", delta=delta)
    assert _matches_torch(ours(r, delta), huber), f"!= HuberLoss(delta={delta})"


def delta_times_huber(r: torch.Tensor, delta: float) -> torch.Tensor:
    return delta * huber_loss(r, delta)


@given(float_tensors(shape=(12,)), deltas)
def test_huber_equals_smooth_l1(r: torch.Tensor, delta: float) -> None:
    zero = torch.zeros_like(r)
    # At delta = 1: d2l's Huber = SmoothL1Loss() = HuberLoss().
    assert _matches_torch(huber_loss(r, 1.0), F.smooth_l1_loss(r, zero, reduction="none"))
    assert _matches_torch(huber_loss(r, 1.0), F.huber_loss(r, zero, reduction="none"))
    # For any delta ours is SmoothL1(beta=delta), and HuberLoss(delta) is delta times it.
    smooth = F.smooth_l1_loss(r, zero, reduction="none", beta=delta)
    assert _matches_torch(huber_loss(r, delta), smooth)
    check_is_huber_loss(delta_times_huber, r, delta)


def test_witness_huber_equals_smooth_l1() -> None:
    # Away from delta = 1, HuberLoss(delta) is not our Huber: it is scaled by delta.
    r = torch.tensor([-3.0, 0.5, 4.0], dtype=torch.float64)
    assert_fails_on(huber_loss, check_is_huber_loss, r, 2.0)
