"""Losses: every loss's autograd gradient passes ``torch.autograd.gradcheck`` in float64.

Central finite differences against the analytic backward, in float64 as gradcheck wants,
with inputs kept off the kinks (L1 at 0, Huber at |r| = delta) where the two disagree.
"""

from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import float_tensors, logit_batches, probability_rows
from witness import assert_fails_on

from stability.notes.losses import (
    huber_loss,
    l1_loss,
    l2_loss,
    naive_cross_entropy,
    softmax,
    stable_cross_entropy,
)

CHAPTER = "Softmax regression and losses"

# --- gradcheck in float64 for every loss ---------------------------------------------------

KINK_MARGIN = 1e-2  # keep residuals off L1's kink at 0 and Huber's at |r| = delta: gradcheck's
# central differences use eps = 1e-6, so a margin of 1e-2 never straddles a kink.


def _gradcheck_inputs(draw: st.DrawFn, name: str) -> tuple[torch.Tensor, ...]:
    if name in ("softmax", "stable_cross_entropy", "naive_cross_entropy"):
        logits = draw(logit_batches(max_batch=3, max_classes=5, bound=20.0))
        batch, k = logits.shape
        return logits, draw(probability_rows(batch, k))
    y_hat = draw(float_tensors(shape=(6,), min_magnitude=KINK_MARGIN))
    return y_hat, torch.zeros(6, dtype=torch.float64)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "l2_loss": l2_loss,
    "l1_loss": l1_loss,
    # at delta = 1; residuals near |r| = 1 are pushed off that kink in the test
    "huber_loss": lambda r, y: huber_loss(r - y, 1.0),
    "softmax": lambda o, t: softmax(o) * t,
    "stable_cross_entropy": stable_cross_entropy,
    "naive_cross_entropy": naive_cross_entropy,
}


def _passes_gradcheck(fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> bool:
    first = inputs[0].detach().clone().requires_grad_(True)
    return bool(torch.autograd.gradcheck(fn, (first, *inputs[1:]), raise_exception=False))


def check_gradcheck(fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> None:
    assert _passes_gradcheck(fn, inputs), "autograd disagrees with central differences"


@pytest.mark.parametrize("name", sorted(LOSSES))
@given(data=st.data())
def test_gradcheck_losses(name: str, data: st.DataObject) -> None:
    inputs = _gradcheck_inputs(data.draw, name)
    if name == "huber_loss":  # move residuals within KINK_MARGIN of |r| = 1 off the kink
        r = inputs[0]
        near = (r.abs() - 1.0).abs() < KINK_MARGIN
        inputs = (torch.where(near, r * 2, r), inputs[1])
    check_gradcheck(LOSSES[name], inputs)


class _L2WithMseBackward(torch.autograd.Function):
    """Known-bad: the L2 loss forward with MSE's backward (2 r): a hand-written gradient bug."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, y_hat: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(y_hat)  # type: ignore[attr-defined]
        return l2_loss(y_hat, torch.zeros_like(y_hat))

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (y_hat,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * 2 * y_hat


def test_witness_gradcheck_losses() -> None:
    y_hat = torch.tensor([0.5, -1.5, 2.0], dtype=torch.float64)
    bad = _L2WithMseBackward.apply
    assert_fails_on(bad, check_gradcheck, (y_hat,), variant_name="L2 with MSE's backward")
