"""Softmax regression and losses: softmax, stable cross-entropy, L2/L1/Huber, label smoothing.

The notes: softmax turns scores into probabilities and cross-entropy compares them with the
labels; L2's gradient is the residual, L1's is a constant size far from the target (and a
subgradient at 0), Huber stitches the two so there is no kink; soft labels put 0.9 on the
true class and 0.1/(n-1) elsewhere. Closed forms live in ``stability.notes.losses``; here autograd
and torch's own losses are held against them.
"""

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from strategies import class_labels, float_tensors, logit_batches, probability_rows

from stability.notes.losses import (
    cross_entropy_grad,
    huber_grad,
    huber_loss,
    l1_grad,
    l1_loss,
    l2_grad,
    l2_loss,
    naive_cross_entropy,
    naive_softmax,
    notes_eps_to_torch,
    smooth_labels_notes,
    smooth_labels_torch,
    softmax,
    stable_cross_entropy,
    torch_eps_to_notes,
)

CHAPTER = "Softmax regression and losses"

F64 = torch.float64
F64_RTOL = 1e-9  # float64 closed form vs autograd: a handful of roundings apart
F64_ATOL = 1e-12
F32_EPS = torch.finfo(torch.float32).eps
LOGIT_BOUND = 1e4  # the range in which the stable CE must stay finite in float32
# float32 CE at |logit| <= 1e4: o - lse is a difference of numbers up to 2e4, each rounded
# to half an ulp (2e4 * eps/2); a few such roundings bound the absolute error.
CE_F32_ATOL = 8 * 2 * LOGIT_BOUND * F32_EPS
CE_F32_RTOL = 1e-5

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _close64(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=F64_RTOL, atol=F64_ATOL)


def _autograd(loss: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Gradient of ``loss(x).sum()`` w.r.t. x."""
    x = x.detach().clone().requires_grad_(True)
    loss(x).sum().backward()
    assert x.grad is not None
    return x.grad


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
    return _close64(_autograd(lambda o: loss(o, t), logits), cross_entropy_grad(logits, t))


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


# --- L2, L1, Huber gradients ---------------------------------------------------------------


@st.composite
def _predictions_and_targets(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    n = draw(st.integers(min_value=1, max_value=12))
    return draw(float_tensors(shape=(n,))), draw(float_tensors(shape=(n,)))


def _grad_matches(loss: Loss, grad: Loss, y_hat: torch.Tensor, y: torch.Tensor) -> bool:
    return _close64(_autograd(lambda p: loss(p, y), y_hat), grad(y_hat, y))


@given(_predictions_and_targets())
def test_l2_grad(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    y_hat, y = case
    assert _grad_matches(l2_loss, l2_grad, y_hat, y)
    # torch's MSE has no 1/2: twice l2 per element.
    assert _close64(F.mse_loss(y_hat, y, reduction="none"), 2 * l2_loss(y_hat, y))


def test_witness_l2_grad() -> None:
    # MSE's gradient is 2 (y_hat - y), not the residual: the 1/2 matters.
    y_hat, y = torch.tensor([1.0, -2.0]).double(), torch.tensor([0.0, 1.0]).double()
    assert not _grad_matches(lambda p, t: F.mse_loss(p, t, reduction="none"), l2_grad, y_hat, y)


@given(_predictions_and_targets())
def test_l1_grad(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    y_hat, y = case
    assert _grad_matches(l1_loss, l1_grad, y_hat, y)
    assert _close64(F.l1_loss(y_hat, y, reduction="none"), l1_loss(y_hat, y))
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
    assert _close64(_autograd(lambda x: huber_loss(x, delta), r), huber_grad(r, delta))
    assert bool((huber_grad(r, delta).abs() <= 1).all())


def test_witness_huber_grad() -> None:
    # The unclipped residual (the L2 gradient scaled by 1/delta) is wrong outside |r| <= delta.
    r = torch.tensor([-5.0, 0.5, 3.0], dtype=torch.float64)
    assert not _close64(_autograd(lambda x: huber_loss(x, 1.0), r), r / 1.0)


HUBER_STEP = 1e-7  # relative distance either side of |r| = delta


def _continuous_at_delta(loss: Callable[[torch.Tensor, float], torch.Tensor], d: float) -> bool:
    """Value and slope just inside and outside |r| = delta agree to O(step)."""
    h = HUBER_STEP * d
    inside = torch.tensor([d - h, -(d - h)], dtype=torch.float64)
    outside = torch.tensor([d + h, -(d + h)], dtype=torch.float64)
    # Both slopes have size <= 1 near delta and the quadratic's changes by h/delta: 4h is ample.
    values = (loss(outside, d) - loss(inside, d)).abs() <= 4 * h
    g_in = _autograd(lambda x: loss(x, d), inside)
    g_out = _autograd(lambda x: loss(x, d), outside)
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
    return _close64(ours, theirs)


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


# --- label smoothing ----------------------------------------------------------------------


@st.composite
def _smoothing_cases(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """(logits (B, K) float64, labels (B,), K, a fraction in [0, 1] to scale eps with)."""
    logits = draw(logit_batches(bound=20.0))
    batch, k = logits.shape
    return logits, draw(class_labels(batch, k)), k, draw(st.floats(0.0, 1.0))


def _notes_structure(target: torch.Tensor, labels: torch.Tensor, k: int, eps: float) -> bool:
    """1 - eps on the true class, eps / (K - 1) on the others, rows summing to 1."""
    true = target.gather(1, labels.unsqueeze(1)).squeeze(1)
    others = target.clone()
    others.scatter_(1, labels.unsqueeze(1), eps / (k - 1))
    return (
        _close64(true, torch.full_like(true, 1 - eps))
        and _close64(others, torch.full_like(others, eps / (k - 1)))
        and _close64(target.sum(dim=1), torch.ones(len(labels), dtype=target.dtype))
    )


@given(_smoothing_cases())
def test_label_smoothing_notes(case: tuple[torch.Tensor, torch.Tensor, int, float]) -> None:
    _, labels, k, frac = case
    eps = frac * (k - 1) / k
    target = smooth_labels_notes(labels, k, eps, dtype=F64)
    assert _notes_structure(target, labels, k, eps)


def test_witness_label_smoothing_notes() -> None:
    # torch's targets at the same eps put 1 - eps + eps/K on the true class.
    labels = torch.tensor([0, 2, 1])
    target = smooth_labels_torch(labels, 4, 0.1, dtype=F64)
    assert not _notes_structure(target, labels, 4, 0.1)


def _agrees_with_torch(
    logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, e: float
) -> bool:
    ours = stable_cross_entropy(logits, target).mean()
    return _close64(ours, F.cross_entropy(logits, labels, label_smoothing=e))


@given(_smoothing_cases())
def test_label_smoothing_torch(case: tuple[torch.Tensor, torch.Tensor, int, float]) -> None:
    logits, labels, k, e = case
    target = smooth_labels_torch(labels, k, e, dtype=F64)
    assert _close64(target.sum(dim=1), torch.ones(len(labels), dtype=torch.float64))
    assert _agrees_with_torch(logits, target, labels, e)


_WITNESS_LOGITS = torch.tensor([[3.0, -1.0, 0.5, 2.0], [0.0, 4.0, -2.0, 1.0]], dtype=torch.float64)
_WITNESS_LABELS = torch.tensor([0, 2])


def test_witness_label_smoothing_torch() -> None:
    # Reading torch's e as the notes' eps builds different targets and a different loss.
    target = smooth_labels_notes(_WITNESS_LABELS, 4, 0.3, dtype=F64)
    assert not _agrees_with_torch(_WITNESS_LOGITS, target, _WITNESS_LABELS, 0.3)


@given(_smoothing_cases())
def test_label_smoothing_conversion(case: tuple[torch.Tensor, torch.Tensor, int, float]) -> None:
    logits, labels, k, frac = case
    eps = frac * (k - 1) / k
    e = notes_eps_to_torch(eps, k)
    notes = smooth_labels_notes(labels, k, eps, dtype=F64)
    assert _close64(notes, smooth_labels_torch(labels, k, e, dtype=F64))
    assert _agrees_with_torch(logits, notes, labels, e)
    assert abs(torch_eps_to_notes(e, k) - eps) <= 4 * torch.finfo(torch.float64).eps


def test_witness_label_smoothing_conversion() -> None:
    # Passing the notes' eps straight to torch (no K/(K-1)) gives a different loss.
    notes = smooth_labels_notes(_WITNESS_LABELS, 4, 0.3, dtype=F64)
    assert not _agrees_with_torch(_WITNESS_LOGITS, notes, _WITNESS_LABELS, 0.3)


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


@pytest.mark.parametrize("name", sorted(LOSSES))
@given(data=st.data())
def test_gradcheck_losses(name: str, data: st.DataObject) -> None:
    inputs = _gradcheck_inputs(data.draw, name)
    if name == "huber_loss":  # move residuals within KINK_MARGIN of |r| = 1 off the kink
        r = inputs[0]
        near = (r.abs() - 1.0).abs() < KINK_MARGIN
        inputs = (torch.where(near, r * 2, r), inputs[1])
    assert _passes_gradcheck(LOSSES[name], inputs)


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
    assert not _passes_gradcheck(_L2WithMseBackward.apply, (y_hat,))
