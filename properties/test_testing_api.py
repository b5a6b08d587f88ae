"""Testing your own models: stability.testing's strategies and assertions (all chapters' checks).

The notes' diagnosis of exploding and vanishing gradients, NaN and Inf, turned into tools for
users: each assertion passes on a well-initialised model and fails on a planted bad one
(one layer's weights multiplied up, a broken backward) with a message that names the planted
layer and says by how much it is off.
"""

import math
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from witness import assert_fails_on

from stability.core.config import MLPConfig
from stability.core.inits import INITS
from stability.core.model import build_mlp, input_batch
from stability.errors import StabilityError
from stability.testing import (
    activations,
    assert_gradients_finite,
    assert_no_overflow,
    assert_variance_preserved,
    dtypes,
    inits,
    mlp_configs,
)

CHAPTER = "Testing your own models: strategies and assertions"

BATCH = 64
PLANT_FACTOR = 100.0  # one layer's weights x 100: its variance x 1e4, log10 ratio +4
OVERFLOW_FACTOR = 1e5  # x 1e5: outputs of order 1e5 > 65504, float16's max

# Good models: normalised (variance-preserving) activation x init pairs, width 128, depth <= 4.
# Finite-width noise: for ReLU networks the log of a layer's variance drifts by at most
# sqrt(5 / width) nats per layer (Hanin & Nica 2019: the per-layer variance of log ||a||^2 is
# about 5/n), so the log10 ratio to layer 1 after depth - 1 <= 3 layers has standard
# deviation <= sqrt(3 * 5 / 128) / ln 10 = 0.149; the band (-1, 1) is 6.7 of those.
# Measured (100 seeds, depth 4, width 128, batch 64): sd 0.066, largest |log10 ratio| 0.22.
GOOD_PAIRS = [
    ("relu", "kaiming_normal"),
    ("relu", "kaiming_uniform"),
    ("leaky_relu", "kaiming_normal"),
    ("identity", "orthogonal"),
]
BAND = (-1.0, 1.0)


def good_configs(width: int = 128) -> st.SearchStrategy[MLPConfig]:
    """Configs of a normalised pair at ``width``, depth 2..4, any seed."""
    return st.builds(
        lambda pair, depth, seed: MLPConfig(
            depth=depth, width=width, activation=pair[0], init=pair[1], seed=seed
        ),
        st.sampled_from(GOOD_PAIRS),
        st.integers(min_value=2, max_value=4),
        st.integers(min_value=0, max_value=2**32 - 1),
    )


def at_most(n: int) -> settings:
    """Fewer examples for a slow property, never more than the active profile asks for."""
    return settings(max_examples=min(n, settings.default.max_examples))


def layer_named(error: BaseException) -> int:
    """The layer number an assertion message blames ("... at layer K of L ...")."""
    match = re.search(r"at layer (\d+) of \d+", str(error))
    assert match is not None, f"message names no layer: {error}"
    return int(match.group(1))


def scale_layer_(model: nn.Module, layer: int, factor: float) -> None:
    """Multiply the weights of MLP layer ``layer`` (1-based) by ``factor``, in place."""
    with torch.no_grad():
        model.layers[layer - 1].linear.weight.mul_(factor)  # type: ignore[index, operator]


# -- assert_variance_preserved ---------------------------------------------------------------


@given(good_configs())
@at_most(15)
def test_variance_preserved(config: MLPConfig) -> None:
    """A variance-preserving network passes: every layer within 10x of layer 1, both ways."""
    model = build_mlp(config)
    assert_variance_preserved(model, input_batch(config, BATCH), BAND)


@given(good_configs(), st.data())
@at_most(15)
def test_witness_variance_preserved(config: MLPConfig, data: st.DataObject) -> None:
    """One layer's weights x 100 fails, blamed on that layer, about 10^+4 forward (10^-4 back).

    The good part of the network sits within +-1 of 0 (the property above), so the planted
    layer's log10 ratio is 4 +- 1.
    """
    planted = data.draw(st.integers(min_value=2, max_value=config.depth), label="planted")
    model = build_mlp(config)
    scale_layer_(model, planted, PLANT_FACTOR)
    x = input_batch(config, BATCH)
    name = f"layer {planted} x {PLANT_FACTOR:g}"
    error = assert_fails_on(model, assert_variance_preserved, x, BAND, variant_name=name)
    assert layer_named(error) == planted
    forward = re.search(r"forward variance is 10\^([+-]\d+\.\d+)", str(error))
    backward = re.search(r"backward \(gradient\) variance is 10\^([+-]\d+\.\d+)", str(error))
    assert forward is not None and backward is not None, str(error)
    assert 3.0 <= float(forward.group(1)) <= 5.0
    assert -5.0 <= float(backward.group(1)) <= -3.0


# -- assert_gradients_finite -----------------------------------------------------------------


class _BrokenBackward(torch.autograd.Function):
    """Identity forward, inf gradient backward: a custom op whose backward divides by 0."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad / torch.zeros_like(grad)


class BrokenBackward(nn.Module):
    """A layer that is harmless going forward and poisons the gradient going back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _BrokenBackward.apply(x)  # type: ignore[no-untyped-call]
        return out


def user_model(depth: int, width: int, seed: int, broken_after: int | None = None) -> nn.Sequential:
    """A user's plain nn.Sequential of Linear + ReLU, Kaiming-initialised; optionally with a
    broken backward right after Linear number ``broken_after``."""
    torch.manual_seed(seed)
    parts: list[nn.Module] = []
    for i in range(1, depth + 1):
        linear = nn.Linear(width, width)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        parts.append(linear)
        if i == broken_after:
            parts.append(BrokenBackward())
        parts.append(nn.ReLU())
    return nn.Sequential(*parts)


# Any float32/float64 config up to depth 8, width 64 stays finite both ways: the worst growth
# is standard_normal init (fan_in * Var(W) = 64) with SELU (E[phi^2] / q <= 1.1): at most 70x
# variance per layer, 70^8 = 6e14, values of order 1e8 and weight gradients of order 1e16,
# far inside float32's 3.4e38.
@given(mlp_configs(max_depth=8, max_width=64, dtype=dtypes(reduced=False)))
@at_most(20)
def test_gradients_finite(config: MLPConfig) -> None:
    """Every full-precision network the strategy draws has finite gradients."""
    model = build_mlp(config)
    assert_gradients_finite(model, input_batch(config, 32))


@given(
    depth=st.integers(min_value=1, max_value=6),
    width=st.integers(min_value=2, max_value=32),
    seed=st.integers(min_value=0, max_value=2**16),
    data=st.data(),
)
@at_most(15)
def test_witness_gradients_finite(depth: int, width: int, seed: int, data: st.DataObject) -> None:
    """A broken backward after Linear k fails, blamed on layer k (where backward breaks); an
    inf weight in layer k fails, blamed on layer k (where the forward pass breaks)."""
    broken = data.draw(st.integers(min_value=1, max_value=depth), label="broken")
    x = torch.randn(16, width)
    planted = user_model(depth, width, seed, broken)
    name = f"a broken backward after Linear {broken}"
    error = assert_fails_on(planted, assert_gradients_finite, x, variant_name=name)
    assert layer_named(error) == broken
    assert "non-finite gradient" in str(error)
    model = user_model(depth, width, seed)
    assert_gradients_finite(model, x)  # the same model without the plant passes
    with torch.no_grad():
        model[2 * (broken - 1)].weight[0, 0] = math.inf  # type: ignore[index]
    name = f"an inf weight in Linear {broken}"
    error = assert_fails_on(model, assert_gradients_finite, x, variant_name=name)
    assert layer_named(error) == broken
    assert "non-finite forward" in str(error)


# -- assert_no_overflow ----------------------------------------------------------------------

# Normalised inits (all but standard_normal) at depth <= 8 and width <= 64 keep every value
# far below 65504: the fastest growth is SELU or identity with Kaiming (about 2.2x variance a
# layer), 2.2^8 = 550, standard deviation 23 and a few hundred at most.
reduced_configs = mlp_configs(
    max_depth=8,
    max_width=64,
    init=inits(names=[n for n in INITS if n != "standard_normal"]),
    dtype=dtypes(reduced=True),
)


@given(reduced_configs)
@at_most(20)
def test_no_overflow(config: MLPConfig) -> None:
    """Emulated float16/bfloat16 networks with normalised inits never overflow."""
    model = build_mlp(config)
    x = input_batch(config, 32)
    assert_no_overflow(model, x, dtype=config.dtype)


@given(good_configs(width=32), st.data())
@at_most(10)
def test_witness_no_overflow(config: MLPConfig, data: st.DataObject) -> None:
    """Layer k's weights x 1e5 overflow float16 there (and not bfloat16, whose max is 3e38)."""
    planted = data.draw(st.integers(min_value=1, max_value=config.depth), label="planted")
    model = build_mlp(config)
    x = input_batch(config, 32)
    assert_no_overflow(model, x, dtype="float16")  # the same model before the plant passes
    scale_layer_(model, planted, OVERFLOW_FACTOR)
    name = f"layer {planted} x {OVERFLOW_FACTOR:g}"
    error = assert_fails_on(model, assert_no_overflow, x, dtype="float16", variant_name=name)
    assert layer_named(error) == planted
    assert "65504" in str(error)
    assert_no_overflow(model, x, dtype="bfloat16")


# -- strategies ------------------------------------------------------------------------------


def within(config: MLPConfig, max_depth: int, max_width: int) -> bool:
    return 1 <= config.depth <= max_depth and 1 <= config.width <= max_width


Configs = Callable[..., st.SearchStrategy[MLPConfig]]  # mlp_configs' signature


def configs_past_the_width_bound(
    max_depth: int = 8, max_width: int = 64
) -> st.SearchStrategy[MLPConfig]:
    """Known-bad: draws widths above the bound it was given (padding its own margin on)."""
    return mlp_configs(max_depth=max_depth, min_width=max_width + 1, max_width=max_width + 4)


@pytest.mark.parametrize("configs", [pytest.param(mlp_configs, id="mlp_configs")])
@given(max_depth=st.integers(1, 4), max_width=st.integers(1, 8), data=st.data())
@at_most(20)
def test_mlp_configs_within_bounds(
    configs: Configs, max_depth: int, max_width: int, data: st.DataObject
) -> None:
    """Drawn configs respect their bounds, use registry names and build a working model."""
    config = data.draw(configs(max_depth=max_depth, max_width=max_width), label="config")
    assert within(config, max_depth, max_width), (config, max_depth, max_width)
    model = build_mlp(config)
    out = model(input_batch(config, 2))
    assert out.shape == (2, config.width)


def test_witness_mlp_configs_within_bounds() -> None:
    """The same bound check fails on a strategy that draws past its width bound."""
    assert_fails_on(configs_past_the_width_bound, test_mlp_configs_within_bounds)


# -- bad arguments ---------------------------------------------------------------------------

_MODEL = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
_X = torch.randn(8, 4)
BAD_ARGUMENTS: list[tuple[str, Callable[[], object], str]] = [
    ("band-excludes-0", lambda: assert_variance_preserved(_MODEL, _X, (0.5, 2.0)), "lo <= 0"),
    ("band-not-a-pair", lambda: assert_variance_preserved(_MODEL, _X, (1.0,)), "band"),  # type: ignore[arg-type]
    ("band-nan", lambda: assert_variance_preserved(_MODEL, _X, (math.nan, 1.0)), "band"),
    ("overflow-dtype-full", lambda: assert_no_overflow(_MODEL, _X, "float32"), "bfloat16"),
    ("overflow-dtype-unknown", lambda: assert_no_overflow(_MODEL, _X, "float8"), "float16"),
    ("activation-unknown", lambda: activations(["relux"]), "relux"),
    ("inits-empty", lambda: inits(names=[]), "init"),
    ("dtype-unknown", lambda: dtypes(["half"]), "float16"),
    ("depth-zero", lambda: mlp_configs(max_depth=0), "depth"),
    ("width-inverted", lambda: mlp_configs(max_width=2, min_width=3), "width"),
]
GOOD_ARGUMENTS: list[tuple[str, Callable[[], object]]] = [
    ("band", lambda: assert_variance_preserved(_MODEL, _X, (-3.0, 3.0))),
    ("overflow-dtype", lambda: assert_no_overflow(_MODEL, _X, "bfloat16")),
    ("activation", lambda: activations(["relu"])),
    ("inits", lambda: inits(names=["xavier_normal"])),
    ("dtype", lambda: dtypes(["float16"])),
    ("depth", lambda: mlp_configs(max_depth=1)),
    ("width", lambda: mlp_configs(max_width=3, min_width=3)),
]


def check_rejects(call: Callable[[], object], needle: str | None = None) -> None:
    """``call()`` raises StabilityError, its message containing ``needle`` (if given)."""
    with pytest.raises(StabilityError, match=None if needle is None else re.escape(needle)):
        call()


@pytest.mark.parametrize(
    ("call", "needle"), [(c, n) for _, c, n in BAD_ARGUMENTS], ids=[i for i, _, _ in BAD_ARGUMENTS]
)
def test_bad_arguments_raise(call: Callable[[], object], needle: str) -> None:
    """Bad arguments raise StabilityError with a message naming the value or the choices."""
    check_rejects(call, needle)


@pytest.mark.parametrize("call", [c for _, c in GOOD_ARGUMENTS], ids=[i for i, _ in GOOD_ARGUMENTS])
def test_witness_bad_arguments_raise(call: Callable[[], object]) -> None:
    """The corrected arguments are not rejected, whatever the message: the error is about the
    value, not the call (another exception from them propagates as an error)."""
    assert_fails_on(call, check_rejects)
