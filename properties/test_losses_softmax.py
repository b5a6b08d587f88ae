"""Softmax regression: softmax and a cross-entropy that stays finite, and their gradients.

The notes: softmax turns scores into probabilities and cross-entropy compares them with the
labels. Computed naively, exp overflows (float32 at a logit of 89); subtracting the largest
logit first (``stability.notes.losses.softmax``, ``stable_cross_entropy``) keeps both finite
and right for logits up to 1e4 in float32, and the gradient of the cross-entropy is
softmax - target. The naive versions are the witnesses.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from loss_helpers import Loss, autograd, close64
from strategies import logit_batches, probability_rows

from stability.notes.losses import (
    cross_entropy_grad,
    naive_cross_entropy,
    naive_softmax,
    softmax,
    stable_cross_entropy,
)

CHAPTER = "Softmax regression and losses"

F32_EPS = torch.finfo(torch.float32).eps
LOGIT_BOUND = 1e4  # the range in which the stable CE must stay finite in float32
# float32 CE at |logit| <= 1e4: o - lse is a difference of numbers up to 2e4, each rounded
# to half an ulp (2e4 * eps/2); a few such roundings bound the absolute error.
CE_F32_ATOL = 8 * 2 * LOGIT_BOUND * F32_EPS
CE_F32_RTOL = 1e-5


# --- softmax --------------------------------------------------------------------------------


def _sums_to_one(p: torch.Tensor) -> bool:
    sums = p.sum(dim=-1)
    tol = 8 * torch.finfo(p.dtype).eps * p.shape[-1]  # K rounded terms of size <= 1
    return bool(torch.isfinite(p).all() and (p >= 0).all() and ((sums - 1).abs() <= tol).all())


@given(logit_batches(bound=LOGIT_BOUND, dtype=torch.float32))
def test_softmax_sums_to_one(logits: torch.Tensor) -> None:
    assert _sums_to_one(softmax(logits))


def test_witness_softmax_sums_to_one() -> None:
    # exp(100) overflows float32 (max ~3.4e38 = exp(88.7)): inf / inf = nan.
    assert not _sums_to_one(naive_softmax(torch.tensor([[100.0, 0.0, -1.0]])))


def _shift_invariant(fn: Callable[[torch.Tensor], torch.Tensor], o: torch.Tensor, c: float) -> bool:
    # o + c rounds each logit by up to |c| eps/2, which moves softmax by about that much.
    tol = 4 * (abs(c) + o.abs().max().item()) * torch.finfo(o.dtype).eps
    a, b = fn(o), fn(o + c)
    return bool(torch.isfinite(b).all() and ((a - b).abs() <= tol).all())


@given(logit_batches(), st.floats(min_value=-1e3, max_value=1e3))
def test_softmax_shift_invariant(logits: torch.Tensor, c: float) -> None:
    assert _shift_invariant(softmax, logits, c)


def test_witness_softmax_shift_invariant() -> None:
    # Shifting by 1000 sends the naive exp past float64's max (exp(709.8)).
    assert not _shift_invariant(naive_softmax, torch.tensor([[1.0, 2.0, 3.0]]).double(), 1e3)


# --- stable cross-entropy ------------------------------------------------------------------


def _ce_finite_and_right(loss: Loss, logits: torch.Tensor, target: torch.Tensor) -> bool:
    """Finite in float32 and equal to a float64 evaluation of the same inputs."""
    got = loss(logits, target)
    want = F.cross_entropy(logits.double(), target.double(), reduction="none")
    close = torch.allclose(got.double(), want, rtol=CE_F32_RTOL, atol=CE_F32_ATOL)
    return bool(torch.isfinite(got).all()) and close


@st.composite
def _f32_logits_and_targets(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    logits = draw(logit_batches(bound=LOGIT_BOUND, dtype=torch.float32))
    batch, k = logits.shape
    return logits, draw(probability_rows(batch, k)).float()


@given(_f32_logits_and_targets())
def test_stable_cross_entropy_finite(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, target = case
    assert _ce_finite_and_right(stable_cross_entropy, logits, target)


def test_witness_stable_cross_entropy_finite() -> None:
    # The naive CE overflows at logit 100 in float32; at 1e4 all the more.
    logits = torch.tensor([[1e2, 0.0, -5.0], [LOGIT_BOUND, -LOGIT_BOUND, 0.0]])
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    assert not _ce_finite_and_right(naive_cross_entropy, logits, target)


def _ce_grad_is_softmax_minus_target(loss: Loss, logits: torch.Tensor, t: torch.Tensor) -> bool:
    return close64(autograd(lambda o: loss(o, t), logits), cross_entropy_grad(logits, t))


@st.composite
def _f64_logits_and_targets(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    logits = draw(logit_batches(bound=50.0))
    batch, k = logits.shape
    return logits, draw(probability_rows(batch, k))


@given(_f64_logits_and_targets())
def test_cross_entropy_grad(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, target = case
    assert _ce_grad_is_softmax_minus_target(stable_cross_entropy, logits, target)


def test_witness_cross_entropy_grad() -> None:
    # The naive CE's autograd is nan once exp overflows (float64: logit > 709.8).
    logits = torch.tensor([[800.0, 0.0, 1.0]], dtype=torch.float64)
    target = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    assert not _ce_grad_is_softmax_minus_target(naive_cross_entropy, logits, target)
