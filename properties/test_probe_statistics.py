"""The probe's own arithmetic: its statistics are those of the tensors the network produced.

Two places where a variance formula can go quietly wrong:

- under emulated reduced precision each block rounds its pre-activation, output and
  gradients to float16; the probe must report the statistics of the rounded values (the
  ones the network computes with), not of what it would have computed in float32. Checked
  where rounding matters: N(0, 0.01^2) weights shrink the signal into float16's subnormal
  range within a few layers, where rounding changes a variance by percent or more;
- where the mean is large against the spread, the one-pass formula ``E[x^2] - mean^2``
  cancels catastrophically (relative error ~ eps * mean^2 / var); the probe must switch to
  two passes. Checked against float64 on the same float32 values, with the tolerance
  derived in ``variance_tolerance``.
"""

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn
from witness import assert_fails_on

from stability.core.config import MLPConfig
from stability.core.emulation import round_to
from stability.core.model import MLP, build_mlp, input_batch
from stability.core.probe import Probe, probe, projection_loss

CHAPTER = "Numerical stability: float16 range, overflow and underflow"

EPS32 = 2.0**-24  # float32 unit roundoff
# float32 reductions of at most 32 * 16 elements, each within (log2 n + 2) eps relative
# (torch sums pairwise/blocked): 1e-5 leaves a factor > 10 over that bound.
EMULATED_RTOL = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")


def hand_statistics(model: MLP, x: torch.Tensor, rounded: bool = True) -> list[list[float]]:
    """Per layer (preact_var, act_var, grad_var), recomputed in float64 from the tensors the
    model produced (``rounded=False``: from the values before the float16 rounding)."""
    dtype = model.config.precision.round_dtype
    assert dtype is not None
    captured: dict[str, list[torch.Tensor]] = {"pre": [], "out": []}
    handles = []
    for block in model.layers:
        handles.append(
            block.linear.register_forward_hook(lambda m, a, o: captured["pre"].append(o))
        )
        handles.append(block.register_forward_hook(lambda m, a, o: captured["out"].append(o)))
    grads: list[torch.Tensor] = []
    model.zero_grad(set_to_none=True)
    out = model(x)
    for o in captured["out"]:
        o.register_hook(lambda g: grads.append(g))
    projection_loss(out).backward()
    for h in handles:
        h.remove()
    grads.reverse()
    fix = (lambda t: round_to(t.detach(), dtype)) if rounded else (lambda t: t.detach())
    if not rounded:  # the block output the model kept is rounded; undo is impossible, so
        # recompute each output from its pre-activation without rounding
        outs = [
            blk.activation(p.detach()) for blk, p in zip(model.layers, captured["pre"], strict=True)
        ]
    else:
        outs = [o.detach() for o in captured["out"]]
    return [
        [float(fix(p).double().var(unbiased=False)), float(o.double().var(unbiased=False)),
         float(fix(g).double().var(unbiased=False))]
        for p, o, g in zip(captured["pre"], outs, grads, strict=True)
    ]  # fmt: skip


def check_emulated_statistics(expected: list[list[float]], model: MLP, x: torch.Tensor) -> None:
    """The probe's preact_var, act_var and grad_var equal ``expected`` to float32 accuracy."""
    for stats, (pre, act, grad) in zip(probe(model, x), expected, strict=True):
        for name, got, want in (
            ("preact_var", stats.preact_var, pre),
            ("act_var", stats.act_var, act),
            ("grad_var", stats.grad_var, grad),
        ):
            assert math.isclose(got, want, rel_tol=EMULATED_RTOL, abs_tol=0.0), (
                f"layer {stats.layer} {name}: probe {got!r}, from the tensors {want!r}"
            )


SHRINKING = MLPConfig(depth=6, width=32, activation="tanh", init="normal", dtype="float16")


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("init", ["normal", "xavier_normal"])
def test_emulated_statistics_are_the_rounded_tensors(init: str, seed: int) -> None:
    """Under float16 emulation the probe reports the statistics of the rounded tensors."""
    config = MLPConfig(6, 32, "tanh", init, "float16", seed=seed)
    model, x = build_mlp(config), input_batch(config, 16)
    check_emulated_statistics(hand_statistics(model, x), model, x)


def test_witness_emulated_statistics_are_the_rounded_tensors() -> None:
    """Statistics of the unrounded values differ where float16 rounding bites: rejected."""
    model, x = build_mlp(SHRINKING), input_batch(SHRINKING, 16)
    unrounded = hand_statistics(model, x, rounded=False)
    assert_fails_on(unrounded, check_emulated_statistics, model, x)


def probe_variance(values: torch.Tensor) -> float:
    """The variance the probe reports for a layer whose output is ``values``."""
    layer = nn.Identity()
    model = nn.Sequential(layer)
    with Probe(model, modules=[layer]) as p:
        model(values)
        return p.results()[0].act_var


def one_pass_variance(values: torch.Tensor) -> float:
    """The textbook shortcut ``E[x^2] - mean^2`` in float32: cancels when mean >> spread."""
    mean = float(values.sum()) / values.numel()
    return float(torch.dot(values, values)) / values.numel() - mean * mean


def variance_tolerance(n: int, ratio: float) -> float:
    """Relative error bound of a float32 two-pass variance, ``ratio = |mean| / sd``.

    The float32 mean is off by ``dm <= (log2 n + 2) eps |mean|`` (pairwise sum), which adds
    ``dm^2`` to the variance: relative ``((log2 n + 2) eps ratio)^2``; the sum of squared
    deviations adds ``(log2 n + 2) eps``. Factor 4 on each for slack.
    """
    k = math.log2(n) + 2
    return 4 * (k * EPS32 * ratio) ** 2 + 4 * k * EPS32


@pytest.mark.parametrize("variance", [probe_variance])
@given(
    n=st.sampled_from([64, 1000, 4096]),
    log_ratio=st.floats(min_value=0.0, max_value=4.0),
    log_sd=st.floats(min_value=-3.0, max_value=3.0),
)
@example(n=4096, log_ratio=4.0, log_sd=0.0)
@settings(max_examples=25)
def test_variance_with_large_mean(
    variance: Callable[[torch.Tensor], float], n: int, log_ratio: float, log_sd: float
) -> None:
    """Variance of ``mean + sd * z`` (float32), mean up to 10^4 sd, agrees with float64."""
    sd = 10.0**log_sd
    gen = torch.Generator().manual_seed(n)
    values = (sd * 10.0**log_ratio + sd * torch.randn(n, generator=gen)).float()
    exact = float(values.double().var(unbiased=False))
    got = variance(values)
    tolerance = variance_tolerance(n, 10.0**log_ratio)
    assert abs(got - exact) <= tolerance * exact, f"variance {got!r} against {exact!r}"


def test_witness_variance_with_large_mean() -> None:
    """The one-pass shortcut loses every digit at mean = 10^4 sd: rejected."""
    assert_fails_on(one_pass_variance, test_variance_with_large_mean)
