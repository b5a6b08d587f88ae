"""Model initialisation: each init's weight variance, Xavier's formulas, gains and LSUV.

The notes derive Xavier initialisation: keep the forward and backward variance by choosing
Var(W) = 2/(n_in + n_out), as N(0, 2/(n_in + n_out)) or U(-a, a) with a^2/3 equal to it,
a = sqrt(6/(n_in + n_out)). Here every registered init's stated variance is checked against
the empirical variance of the weights it draws, for any fan_in and fan_out; the uniform
inits' bounds; the gains against ``torch.nn.init.calculate_gain``; that ``torch_default``
is what ``nn.Linear`` itself does (variance 1/(3 fan_in), not Kaiming); that torch's own
init functions agree with the registry; and that LSUV leaves unit pre-activation variance.

Bound for the variance checks (``variance_matches``): the weights have mean 0, so the
statistic is the second moment about 0, ``m2 = mean(w^2)`` over the ``n = fan_in*fan_out``
entries, i.i.d. with ``E m2 = sigma^2`` and ``Var m2 = (mu4 - sigma^4)/n`` exactly, where
``mu4 = 3 sigma^4`` (normal) or ``9/5 sigma^4`` (uniform). With ``n >= 64`` the normal
approximation of ``m2`` is good to the 5-sigma tails (chi-square with >= 64 degrees of
freedom), and we accept ``|m2 - sigma^2| <= 5 sd``. Orthogonal weights are exact: their
rows (or columns) are orthonormal, so sum(w^2) = min(fan_in, fan_out) up to float64 rounding.
"""

import functools
import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds
from torch import nn
from witness import assert_fails_on

from stability.core.activations import ACTIVATIONS, LEAKY_RELU_SLOPE, get_activation
from stability.core.config import MLPConfig
from stability.core.inits import INITS, LSUV_TOLERANCE, get_init
from stability.core.model import apply_lsuv_, build_mlp
from stability.core.probe import probe

CHAPTER = "Model initialisation"

Z = 5.0  # sigma margin of every statistical bound here
EXACT_RTOL = 1e-12  # float64 rounding of an orthonormal matrix's squared entries
KURTOSIS = {"normal": 3.0, "uniform": 9.0 / 5.0}  # mu4 / sigma^4
DISTRIBUTION = {
    "normal": "normal",
    "standard_normal": "normal",
    "xavier_normal": "normal",
    "kaiming_normal": "normal",
    "lecun_normal": "normal",
    "torch_default": "uniform",
    "xavier_uniform": "uniform",
    "kaiming_uniform": "uniform",
    "orthogonal": "exact",
}
STATED = sorted(name for name, init in INITS.items() if init.variance is not None)
# U(-b, b) bounds of the uniform inits (the notes' a = sqrt(6/(n_in + n_out)) for Xavier).
UNIFORM_BOUNDS = {
    "xavier_uniform": lambda fi, fo: math.sqrt(6.0 / (fi + fo)),
    "kaiming_uniform": lambda fi, fo: math.sqrt(6.0 / fi),
    "torch_default": lambda fi, fo: 1.0 / math.sqrt(fi),
}
# Registry names torch spells differently, and calculate_gain's parameter where it takes one.
TORCH_GAIN_NAMES = {"identity": "linear"}
TORCH_GAIN_PARAMS = {"leaky_relu": LEAKY_RELU_SLOPE}
FANS = st.integers(min_value=8, max_value=512)
BIG_FANS = st.integers(min_value=64, max_value=512)  # n >= 4096: room to reject a factor 2


# Small float64 work: one thread is faster than two contending ones.
pytestmark = pytest.mark.usefixtures("one_thread")


def draw_weights(init: str, fan_in: int, fan_out: int, seed: int) -> torch.Tensor:
    """A float64 (fan_out, fan_in) weight filled by the named init."""
    weight = torch.empty(fan_out, fan_in, dtype=torch.float64)
    get_init(init).apply(weight, torch.Generator().manual_seed(seed))
    return weight


def variance_matches(weight: torch.Tensor, claimed: float, distribution: str) -> bool:
    """Is ``mean(w^2)`` within 5 sd of ``claimed`` (module docstring; exact for orthogonal)?"""
    m2 = float((weight.double() ** 2).mean())
    if distribution == "exact":
        return abs(m2 - claimed) <= EXACT_RTOL * claimed
    sd = claimed * math.sqrt((KURTOSIS[distribution] - 1.0) / weight.numel())
    return abs(m2 - claimed) <= Z * sd


Formula = Callable[[int, int], float]  # (fan_in, fan_out) -> Var(W)


def stated_formula(init: str) -> Formula:
    variance = get_init(init).variance
    assert variance is not None
    return variance


def stated_variance(init: str, fan_in: int, fan_out: int) -> float:
    return stated_formula(init)(fan_in, fan_out)


def check_variance(
    weight: torch.Tensor, claimed: float, distribution: str, what: str = "weights"
) -> None:
    m2 = float((weight.double() ** 2).mean())
    assert variance_matches(weight, claimed, distribution), f"{what}: mean(w^2) {m2} != {claimed}"


def check_variance_formula(
    formula: Formula, init: str, fan_in: int, fan_out: int, seed: int
) -> None:
    """Weights drawn by ``init`` have the variance ``formula`` states (5 sigma; exact for
    orthogonal)."""
    weight = draw_weights(init, fan_in, fan_out, seed)
    check_variance(weight, formula(fan_in, fan_out), DISTRIBUTION[init], init)


def linear_network_variance(fan_in: int, fan_out: int) -> float:
    """Known-bad for Kaiming: 1/fan_in, the formula for a linear network (half of relu's)."""
    return 1.0 / fan_in


def xavier_variance(fan_in: int, fan_out: int) -> float:
    """Known-bad for orthogonal weights of unequal fans (their mean square is 1/max(fans))."""
    return 2.0 / (fan_in + fan_out)


@given(init=st.sampled_from(STATED), fan_in=FANS, fan_out=FANS, seed=seeds())
def test_weight_variance_matches_formula(init: str, fan_in: int, fan_out: int, seed: int) -> None:
    """Empirical Var(W) equals the init's stated variance(fan_in, fan_out)."""
    assert set(DISTRIBUTION) == set(STATED)  # a new init needs its mu4 classified here
    check_variance_formula(stated_formula(init), init, fan_in, fan_out, seed)


@given(fan_in=BIG_FANS, fan_out=BIG_FANS, seed=seeds())
def test_witness_weight_variance_matches_formula(fan_in: int, fan_out: int, seed: int) -> None:
    """Kaiming with its variance halved (the linear-network formula) is rejected; so is
    Xavier's formula for orthogonal weights of unequal fans."""
    fans = (fan_in, fan_out, seed)
    assert_fails_on(linear_network_variance, check_variance_formula, "kaiming_normal", *fans)
    if fan_in != fan_out:
        assert_fails_on(xavier_variance, check_variance_formula, "orthogonal", *fans)


def check_orthonormal(init: str, fan_in: int, fan_out: int, seed: int) -> None:
    weight = draw_weights(init, fan_in, fan_out, seed)
    gram = weight @ weight.T if fan_out <= fan_in else weight.T @ weight
    torch.testing.assert_close(gram, torch.eye(min(fan_in, fan_out), dtype=torch.float64))


@given(fan_in=FANS, fan_out=FANS, seed=seeds())
def test_orthogonal_is_orthonormal(fan_in: int, fan_out: int, seed: int) -> None:
    """Orthogonal weights: W W^T = I (fan_out <= fan_in) or W^T W = I, hence its exact variance."""
    check_orthonormal("orthogonal", fan_in, fan_out, seed)


@given(fan_in=FANS, fan_out=FANS, seed=seeds())
def test_witness_orthogonal_is_orthonormal(fan_in: int, fan_out: int, seed: int) -> None:
    """Xavier-normal weights of the same variance are not orthonormal."""
    assert_fails_on("xavier_normal", check_orthonormal, fan_in, fan_out, seed)


def within_uniform_bound(weight: torch.Tensor, bound: float) -> bool:
    """All |w| <= b, and max |w| >= b (1 - 15/n): for n draws from U(-b, b) the chance of
    max |w| < b (1 - t) is (1 - t)^n <= exp(-t n) = exp(-15) ~ 3e-7 (5 sigma)."""
    top = float(weight.abs().max())
    return top <= bound and top >= bound * (1.0 - 15.0 / weight.numel())


def check_uniform_bound(bound: Formula, init: str, fan_in: int, fan_out: int, seed: int) -> None:
    """Weights drawn by ``init`` fill U(-b, b) for b = ``bound(fan_in, fan_out)``."""
    weight = draw_weights(init, fan_in, fan_out, seed)
    b = bound(fan_in, fan_out)
    assert within_uniform_bound(weight, b), f"{init}: max |w| {float(weight.abs().max())}, b {b}"


def xavier_normal_std(fan_in: int, fan_out: int) -> float:
    """Known-bad as a uniform bound: Xavier's normal standard deviation, sqrt(2/(fi+fo))."""
    return math.sqrt(2.0 / (fan_in + fan_out))


@given(init=st.sampled_from(sorted(UNIFORM_BOUNDS)), fan_in=FANS, fan_out=FANS, seed=seeds())
def test_uniform_bound(init: str, fan_in: int, fan_out: int, seed: int) -> None:
    """xavier_uniform is U(+-sqrt(6/(fi+fo))), kaiming_uniform U(+-sqrt(6/fi)),
    torch_default U(+-1/sqrt(fi))."""
    check_uniform_bound(UNIFORM_BOUNDS[init], init, fan_in, fan_out, seed)
    bound = UNIFORM_BOUNDS[init](fan_in, fan_out)
    # a^2 / 3 is the stated variance: the notes' derivation of the bound
    assert bound**2 / 3.0 == pytest.approx(stated_variance(init, fan_in, fan_out), rel=1e-12)


@given(fan_in=FANS, fan_out=FANS, seed=seeds())
def test_witness_uniform_bound(fan_in: int, fan_out: int, seed: int) -> None:
    """Xavier's normal std used as the uniform bound, sqrt(2/(fi+fo)), is exceeded."""
    assert_fails_on(xavier_normal_std, check_uniform_bound, "xavier_uniform", fan_in, fan_out, seed)


def linear_weight(fan_in: int, fan_out: int, seed: int) -> torch.Tensor:
    """The weight ``nn.Linear`` itself initialises (its reset_parameters, global RNG)."""
    torch.manual_seed(seed)
    return nn.Linear(fan_in, fan_out, dtype=torch.float64).weight.detach()


def check_nn_linear_variance(formula: Formula, fan_in: int, fan_out: int, seed: int) -> None:
    """``nn.Linear``'s own weights have the variance ``formula`` states."""
    check_variance(linear_weight(fan_in, fan_out, seed), formula(fan_in, fan_out), "uniform")


@given(fan_in=FANS, fan_out=FANS, seed=seeds())
def test_torch_default_is_nn_linear(fan_in: int, fan_out: int, seed: int) -> None:
    """nn.Linear draws U(+-1/sqrt(fan_in)), variance 1/(3 fan_in): our ``torch_default``."""
    check_nn_linear_variance(stated_formula("torch_default"), fan_in, fan_out, seed)
    weight = linear_weight(fan_in, fan_out, seed)
    assert within_uniform_bound(weight, UNIFORM_BOUNDS["torch_default"](fan_in, fan_out))


@given(fan_in=BIG_FANS, fan_out=BIG_FANS, seed=seeds())
def test_witness_torch_default_is_nn_linear(fan_in: int, fan_out: int, seed: int) -> None:
    """nn.Linear's default is not Kaiming: the Kaiming variance 2/fan_in is rejected."""
    kaiming = stated_formula("kaiming_uniform")
    assert_fails_on(
        kaiming, check_nn_linear_variance, fan_in, fan_out, seed, variant_name="Kaiming 2/fan_in"
    )


def torch_init(name: str, weight: torch.Tensor) -> None:
    """torch's own init function for a registry init (nonlinearity as the registry assumes)."""
    init = nn.init
    calls = {
        "xavier_normal": lambda: init.xavier_normal_(weight),
        "xavier_uniform": lambda: init.xavier_uniform_(weight),
        "kaiming_normal": lambda: init.kaiming_normal_(weight, nonlinearity="relu"),
        "kaiming_uniform": lambda: init.kaiming_uniform_(weight, nonlinearity="relu"),
        "lecun_normal": lambda: init.kaiming_normal_(weight, nonlinearity="linear"),
        "orthogonal": lambda: init.orthogonal_(weight),
    }
    calls[name]()


TORCH_COUNTERPARTS = ["kaiming_normal", "kaiming_uniform", "lecun_normal", "orthogonal"]
TORCH_COUNTERPARTS += ["xavier_normal", "xavier_uniform"]


def check_torch_init(
    fill: Callable[[torch.Tensor], object], init: str, fan_in: int, fan_out: int, seed: int
) -> None:
    """``fill`` (a torch.nn.init call) draws the variance the registry states for ``init``."""
    torch.manual_seed(seed)
    weight = torch.empty(fan_out, fan_in, dtype=torch.float64)
    fill(weight)
    check_variance(weight, stated_variance(init, fan_in, fan_out), DISTRIBUTION[init], init)


def kaiming_for_tanh(weight: torch.Tensor) -> torch.Tensor:
    """Known-bad for the registry's kaiming_normal: torch's Kaiming with tanh's gain 5/3."""
    return nn.init.kaiming_normal_(weight, nonlinearity="tanh")


@given(init=st.sampled_from(sorted(TORCH_COUNTERPARTS)), fan_in=FANS, fan_out=FANS, seed=seeds())
def test_torch_inits_match_registry(init: str, fan_in: int, fan_out: int, seed: int) -> None:
    """torch.nn.init's functions draw the variance the registry states (float64, 5 sigma)."""
    check_torch_init(functools.partial(torch_init, init), init, fan_in, fan_out, seed)


@given(fan_in=BIG_FANS, fan_out=BIG_FANS, seed=seeds())
def test_witness_torch_inits_match_registry(fan_in: int, fan_out: int, seed: int) -> None:
    """torch's Kaiming for tanh (gain 5/3) does not have the relu variance 2/fan_in."""
    assert_fails_on(kaiming_for_tanh, check_torch_init, "kaiming_normal", fan_in, fan_out, seed)


def torch_gain(name: str) -> float | None:
    """``torch.nn.init.calculate_gain`` for a registry activation; None where torch has none."""
    try:
        return nn.init.calculate_gain(
            TORCH_GAIN_NAMES.get(name, name),  # type: ignore[arg-type]
            TORCH_GAIN_PARAMS.get(name),
        )
    except ValueError:  # "Unsupported nonlinearity": gelu, silu, elu, softplus, ours
        return None


def gain_matches(name: str, gain: float | None) -> bool:
    """``gain`` is torch's gain for this activation (None exactly where torch has none)."""
    expected = torch_gain(name)
    if expected is None or gain is None:
        return expected is None and gain is None
    return math.isclose(gain, expected, rel_tol=1e-12)


def check_gain(gain: float | None, name: str) -> None:
    assert gain_matches(name, gain), f"{name}: gain {gain}, torch's {torch_gain(name)}"


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_gain_matches_torch(name: str) -> None:
    """Registry gains are torch's (linear 1, tanh 5/3, relu sqrt 2, leaky sqrt(2/(1+a^2)),
    selu 3/4), and None exactly where torch defines none."""
    check_gain(get_activation(name).gain, name)


@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        ("tanh", math.sqrt(2.0)),
        ("relu", 5.0 / 3.0),
        ("selu", 1.0),
        ("leaky_relu", math.sqrt(2.0)),
        ("gelu", math.sqrt(2.0)),
        ("identity", None),
    ],
)
def test_witness_gain_matches_torch(name: str, wrong: float | None) -> None:
    """A swapped gain (relu's for tanh), leaky_relu without its slope term, a gain torch
    does not define (gelu), or a missing one (identity's 1) is caught."""
    assert_fails_on(wrong, check_gain, name)


Calibrate = Callable[[nn.Module, torch.Tensor], object]  # (model, batch) -> rescales in place


def lsuv_preact_variances(
    calibrate: Calibrate, activation: str, width: int, depth: int, seed: int
) -> list[float]:
    """Orthogonal start (LSUV's), calibrated on a batch ``x``; pre-activation variances on ``x``."""
    cfg = MLPConfig(depth=depth, width=width, activation=activation, init="orthogonal", seed=seed)
    model = build_mlp(cfg)
    x = torch.randn(256, width, generator=torch.Generator().manual_seed(seed + 7))
    calibrate(model, x)
    return [s.preact_var for s in probe(model, x)]


def no_rescale(model: nn.Module, x: torch.Tensor) -> None:
    """Known-bad: the orthogonal start alone; under relu it halves the variance per layer."""


def lsuv_ok(variances: list[float]) -> bool:
    """Every layer within LSUV's tolerance of 1, plus 1e-3 >= 2/N for N >= 4096 entries
    (the probe divides by N, LSUV by N - 1)."""
    return all(abs(v - 1.0) < LSUV_TOLERANCE + 1e-3 for v in variances)


def check_lsuv(calibrate: Calibrate, activation: str, width: int, depth: int, seed: int) -> None:
    variances = lsuv_preact_variances(calibrate, activation, width, depth, seed)
    assert lsuv_ok(variances), f"pre-activation variances {[round(v, 3) for v in variances]}"


@given(
    activation=st.sampled_from(sorted(ACTIVATIONS)),
    width=st.integers(min_value=16, max_value=128),
    depth=st.integers(min_value=2, max_value=12),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_lsuv_unit_preactivation_variance(
    activation: str, width: int, depth: int, seed: int
) -> None:
    """After LSUV, every layer's pre-activation variance on its calibration batch is 1 +- 0.1."""
    assert get_init("lsuv").variance is None and get_init("lsuv").data_driven
    check_lsuv(apply_lsuv_, activation, width, depth, seed)


@given(
    width=st.integers(min_value=16, max_value=128), seed=st.integers(min_value=0, max_value=2**16)
)
def test_witness_lsuv_unit_preactivation_variance(width: int, seed: int) -> None:
    """Without the rescale, the orthogonal start under relu halves the variance per layer."""
    assert_fails_on(no_rescale, check_lsuv, "relu", width, 8, seed)
