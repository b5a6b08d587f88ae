"""Weight decay and dropout: the decayed SGD step, and unbiased inverted dropout.

The notes: the penalty lambda/2 ||w||^2 turns the SGD step into ``(1 - lr lambda) w - lr grad``
(the weight decays before the gradient step, hence the name), biases are usually not decayed;
dropout perturbs each entry without bias, ``E[x'] = x`` element-wise, by zeroing with
probability p and scaling survivors by 1/(1-p), and is switched off at test time.
Dropout claims are checked for both ``stability.notes.regularisation.dropout`` and
``torch.nn.Dropout``.
"""

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import dropout_probs, float_tensors, seeds
from torch import nn
from witness import assert_fails_on

from stability.notes.regularisation import dropout, dropout_unscaled, sgd_step_weight_decay

CHAPTER = "Weight decay and dropout"

F64_RTOL = 1e-12  # float64, a couple of multiply-adds per entry
F64_ATOL = 1e-12

# --- weight decay -------------------------------------------------------------------------

rates = st.floats(min_value=1e-4, max_value=1.0)
decays = st.floats(min_value=0.0, max_value=1.0)


def _close64(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=F64_RTOL, atol=F64_ATOL)


def _step_on_penalised_loss(
    w: torch.Tensor, g: torch.Tensor, lr: float, penalty: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Plain SGD on ``g . w + penalty(w)``: the linear term's gradient is exactly ``g``."""
    w = w.clone().requires_grad_(True)
    ((g * w).sum() + penalty(w)).backward()
    assert w.grad is not None
    return (w - lr * w.grad).detach()


@st.composite
def _weights_and_grads(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    n = draw(st.integers(min_value=1, max_value=10))
    return draw(float_tensors(shape=(n,))), draw(float_tensors(shape=(n,)))


Penalty = Callable[[float, torch.Tensor], torch.Tensor]  # (lambda, w) -> penalty


def l2_penalty(wd: float, w: torch.Tensor) -> torch.Tensor:
    return wd / 2 * (w**2).sum()


def penalty_without_half(wd: float, w: torch.Tensor) -> torch.Tensor:
    """Known-bad: lambda ||w||^2 without the 1/2 decays twice as fast, (1 - 2 lr lambda) w."""
    return wd * (w**2).sum()


def check_closed_form(
    penalty: Penalty, w: torch.Tensor, g: torch.Tensor, lr: float, wd: float
) -> None:
    """The closed-form decayed step is plain SGD on the loss plus ``penalty``."""
    stepped = _step_on_penalised_loss(w, g, lr, lambda v: penalty(wd, v))
    assert _close64(sgd_step_weight_decay(w, g, lr, wd), stepped), f"lr {lr}, lambda {wd}"


@given(_weights_and_grads(), rates, decays)
def test_weight_decay_closed_form(
    case: tuple[torch.Tensor, torch.Tensor], lr: float, wd: float
) -> None:
    w, g = case
    check_closed_form(l2_penalty, w, g, lr, wd)


def test_witness_weight_decay_closed_form() -> None:
    w, g = torch.tensor([1.0, -2.0]).double(), torch.tensor([0.5, 0.5]).double()
    assert_fails_on(penalty_without_half, check_closed_form, w, g, 0.1, 0.3)


def _torch_sgd_step(w: torch.Tensor, g: torch.Tensor, lr: float, wd: float) -> torch.Tensor:
    param = nn.Parameter(w.clone())
    param.grad = g.clone()
    torch.optim.SGD([param], lr=lr, weight_decay=wd).step()
    return param.detach()


Step = Callable[[torch.Tensor, torch.Tensor, float, float], torch.Tensor]  # (w, g, lr, wd)


def check_matches_torch_sgd(
    step: Step, w: torch.Tensor, g: torch.Tensor, lr: float, wd: float
) -> None:
    assert _close64(_torch_sgd_step(w, g, lr, wd), step(w, g, lr, wd)), f"lr {lr}, wd {wd}"


def decay_after_step(w: torch.Tensor, g: torch.Tensor, lr: float, wd: float) -> torch.Tensor:
    """Known-bad: decays after the gradient step, (1 - lr wd)(w - lr g): off by lr^2 wd g."""
    return (1 - lr * wd) * (w - lr * g)


@given(_weights_and_grads(), rates, decays)
def test_weight_decay_matches_torch_sgd(
    case: tuple[torch.Tensor, torch.Tensor], lr: float, wd: float
) -> None:
    w, g = case
    check_matches_torch_sgd(sgd_step_weight_decay, w, g, lr, wd)


def test_witness_weight_decay_matches_torch_sgd() -> None:
    w, g = torch.tensor([1.0, -2.0]).double(), torch.tensor([3.0, 1.0]).double()
    assert_fails_on(decay_after_step, check_matches_torch_sgd, w, g, 0.5, 0.5)


def _bias_excluded_after_step(optimiser: Callable[[nn.Linear], torch.optim.Optimizer]) -> bool:
    """After one step on a layer, is the weight decayed and the bias plainly stepped?"""
    lr, wd = 0.1, 0.5
    torch.manual_seed(0)
    layer = nn.Linear(4, 3).double()
    with torch.no_grad():
        layer.bias.fill_(1.0)  # a nonzero bias, so decaying it would show
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    layer(torch.randn(5, 4, dtype=torch.float64)).pow(2).sum().backward()
    assert layer.weight.grad is not None and layer.bias.grad is not None
    gw, gb = layer.weight.grad.clone(), layer.bias.grad.clone()
    optimiser(layer).step()
    return _close64(layer.weight.detach(), sgd_step_weight_decay(w0, gw, lr, wd)) and _close64(
        layer.bias.detach(), b0 - lr * gb
    )


def check_bias_excluded(optimiser: Callable[[nn.Linear], torch.optim.Optimizer]) -> None:
    assert _bias_excluded_after_step(optimiser), "the bias was decayed (or the weight not)"


def decay_weight_only(layer: nn.Linear) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        [
            {"params": [layer.weight], "weight_decay": 0.5},
            {"params": [layer.bias], "weight_decay": 0.0},
        ],
        lr=0.1,
    )


def decay_all_parameters(layer: nn.Linear) -> torch.optim.Optimizer:
    """Known-bad: weight_decay on model.parameters() decays the bias too."""
    return torch.optim.SGD(layer.parameters(), lr=0.1, weight_decay=0.5)


def test_weight_decay_excludes_bias() -> None:
    check_bias_excluded(decay_weight_only)


def test_witness_weight_decay_excludes_bias() -> None:
    assert_fails_on(decay_all_parameters, check_bias_excluded)


# --- dropout ------------------------------------------------------------------------------

Dropout = Callable[[torch.Tensor, float, int], torch.Tensor]  # (x, p, seed) -> dropout(x)

SAMPLES = 20_000  # entries per example; M min(p, 1 - p) >= 1000 for p in [0.05, 0.95]
# Bounds are SIGMAS standard deviations of the exact distribution. With >= 1000 expected
# kept and dropped entries the sums are close to normal; 6 (not the minimum 5) leaves room
# for the binomial's heavier tail at p = 0.05 (Chernoff: < 2e-5 per check even then).
SIGMAS = 6.0
F32_EPS = torch.finfo(torch.float32).eps
KEEP_RTOL = 2 * F32_EPS  # x / (1 - p) vs x * (1 / (1 - p)): at most one extra rounding
STAT_RTOL = 1e-4  # float32 outputs summed in float64: rounding well below this


def _reference(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    return dropout(x, p, torch.Generator().manual_seed(seed))


def _torch_module(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return nn.Dropout(p).train()(x)


def _unscaled(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    return dropout_unscaled(x, p, torch.Generator().manual_seed(seed))


def _keep_prob_confused(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """Known-bad: reads p as the keep probability (TF1's keep_prob), scaling by 1/p."""
    return dropout(x, 1.0 - p, torch.Generator().manual_seed(seed))


def _naive_rescale(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """Known-bad: divides the mask by 1 - p unguarded, so p = 1 gives 0 / 0 = nan."""
    keep = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) >= p
    return x * keep / (1.0 - p)


IMPLS: dict[str, Dropout] = {"reference": _reference, "torch": _torch_module}
# The implementations as the parameter of the properties, which witnesses swap for a bad one.
IMPL_PARAMS = [pytest.param(impl, id=name) for name, impl in sorted(IMPLS.items())]


def _sample_input(seed: int) -> torch.Tensor:
    """(SAMPLES,) float32 entries in [0.1, ~5]: nonzero, so a zero output means dropped, and
    positive, so a bias in the mean adds up instead of cancelling between signs (a dropout
    without the rescale shrinks symmetric inputs' sum by less than its standard deviation)."""
    gen = torch.Generator().manual_seed(seed)
    return 0.1 + torch.randn(SAMPLES, generator=gen).abs()


def _unbiased(impl: Dropout, x: torch.Tensor, p: float, seed: int) -> bool:
    # S = sum_i (out_i - x_i) has mean 0 and variance sum_i x_i^2 p / (1 - p): out_i - x_i is
    # -x_i with probability p and x_i p / (1 - p) with probability 1 - p.
    out = impl(x, p, seed).double()
    xd = x.double()
    s = (out - xd).sum().item()
    sd = math.sqrt((xd**2).sum().item() * p / (1 - p))
    slack = STAT_RTOL * xd.abs().sum().item()
    return abs(s) <= SIGMAS * sd + slack


@pytest.mark.parametrize("impl", IMPL_PARAMS)
@given(p=dropout_probs(), seed=seeds())
@example(p=0.5, seed=1)
def test_dropout_unbiased(impl: Dropout, p: float, seed: int) -> None:
    assert _unbiased(impl, _sample_input(seed), p, seed)


def test_witness_dropout_unbiased() -> None:
    # Without the rescale E[out] = (1 - p) x: at p = 0.5 S is about -sum x / 2, while the bound
    # is 6 sqrt(sum x^2) (about 9000 vs 920 for these inputs); at p = 0.05, 900 vs 210.
    assert_fails_on(_unscaled, test_dropout_unbiased)


def _kept_scaled(impl: Dropout, x: torch.Tensor, p: float, seed: int) -> bool:
    out = impl(x, p, seed)
    kept = out != 0
    want = x[kept].double() / (1 - p)
    exact = ((out[kept].double() - want).abs() <= KEEP_RTOL * want.abs()).all()
    return bool(kept.any() and exact)


@pytest.mark.parametrize("impl", IMPL_PARAMS)
@given(p=dropout_probs(), seed=seeds())
@example(p=0.3, seed=0)
def test_dropout_kept_scaled(impl: Dropout, p: float, seed: int) -> None:
    assert _kept_scaled(impl, _sample_input(seed), p, seed)


def test_witness_dropout_kept_scaled() -> None:
    # Survivors keep x instead of x / (1 - p): off by far more than a rounding at any p.
    assert_fails_on(_unscaled, test_dropout_kept_scaled)


def _zeroed_fraction_is_p(impl: Dropout, x: torch.Tensor, p: float, seed: int) -> bool:
    # The number of zeros is Binomial(M, p): mean M p, standard deviation sqrt(M p (1 - p)).
    zeros = int((impl(x, p, seed) == 0).sum())
    m = x.numel()
    return abs(zeros - m * p) <= SIGMAS * math.sqrt(m * p * (1 - p))


@pytest.mark.parametrize("impl", IMPL_PARAMS)
@given(p=dropout_probs(), seed=seeds())
@example(p=0.2, seed=0)
def test_dropout_zeroed_fraction(impl: Dropout, p: float, seed: int) -> None:
    assert _zeroed_fraction_is_p(impl, _sample_input(seed), p, seed)


def test_witness_dropout_zeroed_fraction() -> None:
    # Reading p as the keep probability zeroes 1 - p = 0.8 of the entries, not 0.2 (pinned:
    # near p = 0.5 the two readings agree).
    assert_fails_on(_keep_prob_confused, test_dropout_zeroed_fraction)


def _variance_is(impl: Dropout, x: torch.Tensor, p: float, seed: int) -> bool:
    # T = sum_i (out_i - x_i)^2. Each term is x_i^2 (dropped, probability p) or
    # x_i^2 (p / (1 - p))^2 (kept), so E[T] = sum_i x_i^2 p / (1 - p) (the variance, since
    # E[out_i] = x_i) and Var(T) = sum_i x_i^4 p (1 - p) (1 - (p / (1 - p))^2)^2 (two-point
    # variable: p (1 - p) times the squared gap). At p = 1/2 T is exact: Var(T) = 0.
    xd = x.double()
    t = ((impl(x, p, seed).double() - xd) ** 2).sum().item()
    mean = (xd**2).sum().item() * p / (1 - p)
    var = (xd**4).sum().item() * p * (1 - p) * (1 - (p / (1 - p)) ** 2) ** 2
    return abs(t - mean) <= SIGMAS * math.sqrt(var) + STAT_RTOL * mean


@pytest.mark.parametrize("impl", IMPL_PARAMS)
@given(p=dropout_probs(), seed=seeds())
@example(p=0.5, seed=0)
def test_dropout_variance(impl: Dropout, p: float, seed: int) -> None:
    assert _variance_is(impl, _sample_input(seed), p, seed)


def test_witness_dropout_variance() -> None:
    # Unscaled: E[(out - x)^2] = p x^2, not p x^2 / (1 - p); at p = 1/2 half the target
    # (pinned: at small p the gap, p^2/(1-p) sum x^2, is inside the bound).
    assert_fails_on(_unscaled, test_dropout_variance)


def _eval_identity(apply: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> bool:
    return torch.equal(apply(x), x)


def check_eval_identity(apply: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
    assert _eval_identity(apply, x), "dropout changed its input at test time"


def _eval_mode(impl: str, p: float) -> Callable[[torch.Tensor], torch.Tensor]:
    if impl == "torch":
        return nn.Dropout(p).eval()
    return lambda x: dropout(x, p, torch.Generator().manual_seed(0), training=False)


@pytest.mark.parametrize("impl", sorted(IMPLS))
@given(float_tensors(dtype=torch.float32), st.floats(min_value=0.0, max_value=1.0))
def test_dropout_eval_identity(impl: str, x: torch.Tensor, p: float) -> None:
    check_eval_identity(_eval_mode(impl, p), x)


def test_witness_dropout_eval_identity() -> None:
    # Forgetting model.eval(): a training-mode Dropout still perturbs the input.
    torch.manual_seed(0)
    assert_fails_on(nn.Dropout(0.5).train(), check_eval_identity, torch.ones(100))


@pytest.mark.parametrize("impl", IMPL_PARAMS)
@given(x=float_tensors(dtype=torch.float32), seed=seeds())
@example(x=torch.ones(10), seed=0)
def test_dropout_p0_identity(impl: Dropout, x: torch.Tensor, seed: int) -> None:
    assert torch.equal(impl(x, 0.0, seed), x)


def test_witness_dropout_p0_identity() -> None:
    # With p read as the keep probability, p = 0 drops everything (pinned: ones, not zeros).
    assert_fails_on(_keep_prob_confused, test_dropout_p0_identity)


def _all_zeros(out: torch.Tensor) -> bool:
    return bool((out == 0).all())


@pytest.mark.parametrize("impl", IMPL_PARAMS)
@given(x=float_tensors(dtype=torch.float32), seed=seeds())
@example(x=torch.ones(10), seed=0)
def test_dropout_p1_zeros(impl: Dropout, x: torch.Tensor, seed: int) -> None:
    assert _all_zeros(impl(x, 1.0, seed))


def test_witness_dropout_p1_zeros() -> None:
    # The naive rescale divides the all-zero mask by 1 - p = 0: 0 / 0 = nan, for any x.
    assert_fails_on(_naive_rescale, test_dropout_p1_zeros)
