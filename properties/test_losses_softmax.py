"""Softmax regression: softmax and a cross-entropy that stays finite, and their gradients.

The notes: softmax turns scores into probabilities and cross-entropy compares them with the
labels. Computed naively, exp overflows (float32 at a logit of 89); subtracting the largest
logit first (``stability.notes.losses.softmax``, ``stable_cross_entropy``) keeps both finite
and right for logits up to 1e4 in float32, and the gradient of the cross-entropy is
softmax - target. The naive versions are the witnesses.
"""

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st
from loss_helpers import Loss, autograd, close64
from strategies import logit_batches, probability_rows
from witness import assert_fails_on

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

Softmax = Callable[[torch.Tensor], torch.Tensor]
# The real implementations, as the parameter the witnesses swap for the naive ones.
SOFTMAX = [pytest.param(softmax, id="softmax")]
STABLE_CE = [pytest.param(stable_cross_entropy, id="stable_cross_entropy")]


# --- softmax --------------------------------------------------------------------------------


def _sums_to_one(p: torch.Tensor) -> bool:
    sums = p.sum(dim=-1)
    tol = 8 * torch.finfo(p.dtype).eps * p.shape[-1]  # K rounded terms of size <= 1
    return bool(torch.isfinite(p).all() and (p >= 0).all() and ((sums - 1).abs() <= tol).all())


@pytest.mark.parametrize("softmax_fn", SOFTMAX)
@given(logits=logit_batches(bound=LOGIT_BOUND, dtype=torch.float32))
@example(logits=torch.tensor([[100.0, 0.0, -1.0]]))
def test_softmax_sums_to_one(softmax_fn: Softmax, logits: torch.Tensor) -> None:
    assert _sums_to_one(softmax_fn(logits))


def test_witness_softmax_sums_to_one() -> None:
    # exp(100) overflows float32 (max ~3.4e38 = exp(88.7)): inf / inf = nan.
    assert_fails_on(naive_softmax, test_softmax_sums_to_one)


def _shift_invariant(fn: Callable[[torch.Tensor], torch.Tensor], o: torch.Tensor, c: float) -> bool:
    # o + c rounds each logit by up to |c| eps/2, which moves softmax by about that much.
    tol = 4 * (abs(c) + o.abs().max().item()) * torch.finfo(o.dtype).eps
    a, b = fn(o), fn(o + c)
    return bool(torch.isfinite(b).all() and ((a - b).abs() <= tol).all())


@pytest.mark.parametrize("softmax_fn", SOFTMAX)
@given(logits=logit_batches(), c=st.floats(min_value=-1e3, max_value=1e3))
@example(logits=torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64), c=1e3)
def test_softmax_shift_invariant(softmax_fn: Softmax, logits: torch.Tensor, c: float) -> None:
    assert _shift_invariant(softmax_fn, logits, c)


def test_witness_softmax_shift_invariant() -> None:
    # Shifting by 1000 sends the naive exp past float64's max (exp(709.8)).
    assert_fails_on(naive_softmax, test_softmax_shift_invariant)


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


@pytest.mark.parametrize("loss", STABLE_CE)
@given(case=_f32_logits_and_targets())
@example(
    case=(
        torch.tensor([[1e2, 0.0, -5.0], [LOGIT_BOUND, -LOGIT_BOUND, 0.0]]),
        torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]),
    )
)
def test_stable_cross_entropy_finite(loss: Loss, case: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, target = case
    assert _ce_finite_and_right(loss, logits, target)


def test_witness_stable_cross_entropy_finite() -> None:
    # The naive CE overflows at logit 100 in float32; at 1e4 all the more.
    assert_fails_on(naive_cross_entropy, test_stable_cross_entropy_finite)


def _ce_grad_is_softmax_minus_target(loss: Loss, logits: torch.Tensor, t: torch.Tensor) -> bool:
    return close64(autograd(lambda o: loss(o, t), logits), cross_entropy_grad(logits, t))


@st.composite
def _f64_logits_and_targets(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    logits = draw(logit_batches(bound=50.0))
    batch, k = logits.shape
    return logits, draw(probability_rows(batch, k))


@pytest.mark.parametrize("loss", STABLE_CE)
@given(case=_f64_logits_and_targets())
@example(  # beyond the drawn logits' range: where float64's exp overflows (logit > 709.8)
    case=(
        torch.tensor([[800.0, 0.0, 1.0]], dtype=torch.float64),
        torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64),
    )
)
def test_cross_entropy_grad(loss: Loss, case: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, target = case
    assert _ce_grad_is_softmax_minus_target(loss, logits, target)


def test_witness_cross_entropy_grad() -> None:
    # The naive CE's autograd is nan at the logit of 800 pinned above.
    assert_fails_on(naive_cross_entropy, test_cross_entropy_grad)
