"""Losses for regression: L2, L1 and Huber, their gradients and torch's own versions.

The notes: L2's gradient is the residual, L1's is a constant size far from the target (and
a subgradient at 0), Huber stitches the two so there is no kink at |r| = delta. Closed forms
live in ``stability.notes.losses``; here autograd and torch's losses are held against them.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from loss_helpers import Loss, autograd, close64
from strategies import float_tensors

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


@given(_predictions_and_targets())
def test_l2_grad(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    y_hat, y = case
    assert _grad_matches(l2_loss, l2_grad, y_hat, y)
    # torch's MSE has no 1/2: twice l2 per element.
    assert close64(F.mse_loss(y_hat, y, reduction="none"), 2 * l2_loss(y_hat, y))


def test_witness_l2_grad() -> None:
    # MSE's gradient is 2 (y_hat - y), not the residual: the 1/2 matters.
    y_hat, y = torch.tensor([1.0, -2.0]).double(), torch.tensor([0.0, 1.0]).double()
    assert not _grad_matches(lambda p, t: F.mse_loss(p, t, reduction="none"), l2_grad, y_hat, y)


@given(_predictions_and_targets())
def test_l1_grad(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    y_hat, y = case
    assert _grad_matches(l1_loss, l1_grad, y_hat, y)
    assert close64(F.l1_loss(y_hat, y, reduction="none"), l1_loss(y_hat, y))
    # Far from the target the gradient has constant size 1, whatever the residual.
    g = l1_grad(y_hat, y)
    assert bool((g[y_hat != y].abs() == 1).all())


def test_witness_l1_grad() -> None:
    # The hand-written r / |r| is nan at a zero residual, where autograd uses the subgradient 0.
    y_hat, y = torch.tensor([1.0, 2.0]).double(), torch.tensor([0.0, 2.0]).double()
    assert not _grad_matches(l1_loss, lambda p, t: (p - t) / (p - t).abs(), y_hat, y)


deltas = st.floats(min_value=0.1, max_value=10.0)


@given(float_tensors(shape=(12,)), deltas)
def test_huber_grad(r: torch.Tensor, delta: float) -> None:
    # The gradient is the residual clipped to [-1, 1] after scaling by 1/delta.
    assert close64(autograd(lambda x: huber_loss(x, delta), r), huber_grad(r, delta))
    assert bool((huber_grad(r, delta).abs() <= 1).all())


def test_witness_huber_grad() -> None:
    # The unclipped residual (the L2 gradient scaled by 1/delta) is wrong outside |r| <= delta.
    r = torch.tensor([-5.0, 0.5, 3.0], dtype=torch.float64)
    assert not close64(autograd(lambda x: huber_loss(x, 1.0), r), r / 1.0)


HUBER_STEP = 1e-7  # relative distance either side of |r| = delta


def _continuous_at_delta(loss: Callable[[torch.Tensor, float], torch.Tensor], d: float) -> bool:
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


@given(deltas)
def test_huber_continuous_at_delta(delta: float) -> None:
    assert _continuous_at_delta(huber_loss, delta)


def _stitched_without_offset(r: torch.Tensor, delta: float) -> torch.Tensor:
    """Known-bad Huber: L1 outside, quadratic inside, but no -delta/2: jumps by delta/2."""
    return torch.where(r.abs() > delta, r.abs(), r**2 / (2 * delta))


def test_witness_huber_continuous_at_delta() -> None:
    assert not _continuous_at_delta(_stitched_without_offset, 2.0)


def _matches_torch(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    return close64(ours, theirs)


@given(float_tensors(shape=(12,)), deltas)
def test_huber_equals_smooth_l1(r: torch.Tensor, delta: float) -> None:
    zero = torch.zeros_like(r)
    # At delta = 1: d2l's Huber = SmoothL1Loss() = HuberLoss().
    assert _matches_torch(huber_loss(r, 1.0), F.smooth_l1_loss(r, zero, reduction="none"))
    assert _matches_torch(huber_loss(r, 1.0), F.huber_loss(r, zero, reduction="none"))
    # For any delta ours is SmoothL1(beta=delta), and HuberLoss(delta) is delta times it.
    smooth = F.smooth_l1_loss(r, zero, reduction="none", beta=delta)
    assert _matches_torch(huber_loss(r, delta), smooth)
    huber = F.huber_loss(r, zero, reduction="none", delta=delta)
    assert _matches_torch(delta * huber_loss(r, delta), huber)


def test_witness_huber_equals_smooth_l1() -> None:
    # Away from delta = 1, HuberLoss(delta) is not our Huber: it is scaled by delta.
    r = torch.tensor([-3.0, 0.5, 4.0], dtype=torch.float64)
    theirs = F.huber_loss(r, torch.zeros_like(r), reduction="none", delta=2.0)
    assert not _matches_torch(huber_loss(r, 2.0), theirs)
