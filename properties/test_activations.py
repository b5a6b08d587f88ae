"""Activation functions near zero: which ones look like the identity (value 0, slope 1).

The notes: a layer keeps the variance of its signal and gradient when its activation is
f(x) = x near 0. Taylor at 0: tanh(x) = x - x^3/3 + ..., relu(x) = x for x > 0, so both
qualify; sigmoid(x) = 1/2 + x/4 - x^3/48 does not, and the fix is the scaled logistic
4*sigmoid(x) - 2 = 2*tanh(x/2) = x - x^3/12 + .... Here the registry's value, slope and
cubic coefficient at 0 are checked against autograd and against float64 evaluation.

Bound for the Taylor checks (``taylor_error_bound``): for |x| <= 0.05 every activation here
has |f(x) - (v + s x + c x^3)| <= x^5 (the x^4 terms vanish since f - f(0) is odd or linear,
and the x^5 coefficients are 2/15 for tanh, 1/120 for 2*tanh(x/2), 1/480 for sigmoid, 0 for
the piecewise-linear ones, with the higher terms smaller still); evaluating f in float64
costs at most a few ulps of |f| <= 2, bounded by 16 eps. Dividing by |x|^3 gives the bound on
``(f(x) - x) / x^3 - c``: ``x^2 + 16 eps / |x|^3`` (4e-10 at x = 0.01).
"""

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from witness import assert_fails_on

from stability.core.activations import ACTIVATIONS, Activation, activation_fn, get_activation

CHAPTER = "Activation functions near zero"

EPS64 = torch.finfo(torch.float64).eps
ROUNDING = 16.0 * EPS64  # a few ulps of |f| <= 2 (docstring)
SMALL_X = st.floats(min_value=1e-2, max_value=5e-2)  # where x^5 bounds the Taylor remainder
SIGN = st.sampled_from([-1.0, 1.0])
IDENTITY_LIKE = {"tanh": -1.0 / 3.0, "relu": 0.0, "scaled_logistic": -1.0 / 12.0}
ONE_SIDED = {"relu", "leaky_relu"}  # kink at 0: the expansion holds for x > 0 only
WITH_CUBIC = sorted(name for name, a in ACTIVATIONS.items() if a.cubic_at_0 is not None)
RIGHT_OF_ZERO = 1e-9  # autograd at 0+ (relu, selu have kinks; the registry keeps f'(0+))
SLOPE_TOL = 1e-6  # |f''| <= 1 near 0 here, so f'(1e-9) is within 1e-9 of f'(0+)


def evaluate(name: str, x: float) -> float:
    """f(x) in float64."""
    return float(activation_fn(name)(torch.tensor(x, dtype=torch.float64)))


def cubic_ratio(name: str, x: float) -> float:
    """``(f(x) - x) / x^3``: tends to the x^3 coefficient for identity-like f."""
    return (evaluate(name, x) - x) / x**3


def taylor_error_bound(x: float) -> float:
    """Bound on ``|(f(x) - v - s x) / x^3 - c|`` for |x| <= 0.05 (module docstring)."""
    return x * x + ROUNDING / abs(x) ** 3


def taylor_ok(act: Activation, x: float) -> bool:
    """Does f(x) = v + s x + c x^3 + O(x^5) hold at x with the registry's v, s and c?"""
    c = act.cubic_at_0
    assert c is not None
    measured = (evaluate(act.name, x) - act.value_at_0 - act.slope_at_0 * x) / x**3
    return abs(measured - c) <= taylor_error_bound(x)


def check_taylor(act: Activation, x: float) -> None:
    assert taylor_ok(act, x), f"{act.name}: not {act.cubic_at_0} x^3 + O(x^5) at x = {x}"


def identity_like(act: Activation, x: float) -> bool:
    """Value 0 and slope 1 at 0 (registry), and ``(f(x) - x)/x^3`` measured near its c."""
    if act.value_at_0 != 0.0 or act.slope_at_0 != 1.0 or act.cubic_at_0 is None:
        return False
    return abs(cubic_ratio(act.name, x) - act.cubic_at_0) <= taylor_error_bound(x)


def check_identity_like(act: Activation, x: float) -> None:
    assert identity_like(act, x), f"{act.name} is not x + c x^3 + O(x^5) at x = {x}"


def signed(name: str, x: float, sign: float) -> float:
    return x if name in ONE_SIDED else sign * x


@pytest.mark.parametrize(("name", "cubic"), sorted(IDENTITY_LIKE.items()))
@given(x=SMALL_X, sign=SIGN)
def test_identity_like_near_zero(name: str, cubic: float, x: float, sign: float) -> None:
    """tanh, relu (x > 0) and 4*sigmoid - 2 are x + c x^3 + O(x^5), c = -1/3, 0, -1/12."""
    act = get_activation(name)
    assert act.cubic_at_0 == cubic
    check_identity_like(act, signed(name, x, sign))


@given(x=SMALL_X, sign=SIGN)
def test_witness_identity_like_near_zero(x: float, sign: float) -> None:
    """Plain sigmoid (value 1/2, slope 1/4) fails the same check, even with its value removed."""
    sigmoid = get_activation("sigmoid")
    assert_fails_on(sigmoid, check_identity_like, sign * x)
    shifted = dataclasses.replace(sigmoid, value_at_0=0.0, slope_at_0=1.0)
    assert_fails_on(shifted, check_identity_like, sign * x)  # the data still say slope 1/4
    # and the notes' description of it: 1/2 + x/4 - x^3/48 holds
    assert taylor_ok(sigmoid, sign * x)
    assert (sigmoid.value_at_0, sigmoid.slope_at_0) == (0.5, 0.25)


@pytest.mark.parametrize("name", WITH_CUBIC)
@given(x=SMALL_X, sign=SIGN)
def test_taylor_cubic_at_zero(name: str, x: float, sign: float) -> None:
    """Every registry entry with a cubic coefficient: f = v + s x + c x^3 + O(x^5) in float64."""
    check_taylor(get_activation(name), signed(name, x, sign))


WRONG_CUBIC = [
    pytest.param("tanh", -1.0 / 12.0, id="tanh-with-scaled-logistic-c"),
    pytest.param("scaled_logistic", -1.0 / 3.0, id="scaled-logistic-with-tanh-c"),
    pytest.param("sigmoid", 0.0, id="sigmoid-without-cubic"),
    pytest.param("relu", -1.0 / 3.0, id="relu-with-tanh-c"),
]


@pytest.mark.parametrize(("name", "cubic"), WRONG_CUBIC)
@given(x=SMALL_X)
def test_witness_taylor_cubic_at_zero(name: str, cubic: float, x: float) -> None:
    """A wrong x^3 coefficient is rejected by the same check (|error| >= 1/48 x^3 >> x^5)."""
    wrong = dataclasses.replace(get_activation(name), cubic_at_0=cubic)
    assert_fails_on(wrong, check_taylor, x)


def scaled_logistic(x: float) -> float:
    """The registry's scaled logistic, in float64."""
    return evaluate("scaled_logistic", x)


def check_rescaled_tanh(f: Callable[[float], float], x: float) -> None:
    assert abs(f(x) - 2.0 * math.tanh(x / 2.0)) <= ROUNDING, f"f({x}) != 2 tanh(x/2)"


@given(x=st.floats(min_value=-30.0, max_value=30.0))
def test_scaled_logistic_is_rescaled_tanh(x: float) -> None:
    """4*sigmoid(x) - 2 == 2*tanh(x/2) up to float64 rounding of values bounded by 2."""
    check_rescaled_tanh(scaled_logistic, x)


def twice_tanh(x: float) -> float:
    """Known-bad: scales tanh's output by 2 but forgets to halve its input."""
    return 2.0 * math.tanh(x)


def centred_sigmoid(x: float) -> float:
    """Known-bad: 2*sigmoid(x) - 1, the logistic centred but scaled by 2 instead of 4."""
    return 2.0 / (1.0 + math.exp(-x)) - 1.0


@pytest.mark.parametrize("wrong", [math.tanh, twice_tanh, centred_sigmoid])
@given(x=st.floats(min_value=0.5, max_value=30.0), sign=SIGN)
def test_witness_scaled_logistic_is_rescaled_tanh(
    wrong: Callable[[float], float], x: float, sign: float
) -> None:
    """The unscaled tanh(x), 2*tanh(x) without halving the input, or 2*sigmoid(x) - 1 fail."""
    assert_fails_on(wrong, check_rescaled_tanh, sign * x)


def autograd_at_zero(name: str) -> tuple[float, float]:
    """f(0) and f'(0+) from autograd, in float64."""
    fn = activation_fn(name)
    zero = torch.zeros((), dtype=torch.float64)
    right = torch.tensor(RIGHT_OF_ZERO, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(fn(right), right)
    return float(fn(zero)), float(slope)


def registry_matches_autograd(act: Activation) -> bool:
    value, slope = autograd_at_zero(act.name)
    return abs(value - act.value_at_0) <= ROUNDING and abs(slope - act.slope_at_0) <= SLOPE_TOL


def check_registry(act: Activation) -> None:
    assert registry_matches_autograd(act), f"{act.name}: registry != autograd at 0"


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_registry_matches_autograd(name: str) -> None:
    """Every activation's value and (right) slope at 0 in the registry are what torch computes."""
    check_registry(get_activation(name))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_witness_registry_matches_autograd(name: str) -> None:
    """An entry off by 1e-3 in value or in slope is caught."""
    act = get_activation(name)
    assert_fails_on(dataclasses.replace(act, value_at_0=act.value_at_0 + 1e-3), check_registry)
    assert_fails_on(dataclasses.replace(act, slope_at_0=act.slope_at_0 + 1e-3), check_registry)
