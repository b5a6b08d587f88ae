"""The probe on our MLP and on other modules: bounded fractions, every=N, non-finite kept."""

import math

import pytest
import torch
from torch import nn

from stability import MLPConfig, Probe, build_mlp, input_batch, probe
from stability.core.probe import LayerStats, projection_loss

FRACTIONS = [c for c in LayerStats.columns() if c.endswith("_frac")]


@pytest.mark.parametrize(
    ("activation", "init"),
    [("identity", "normal"), ("tanh", "normal"), ("relu", "standard_normal")],
)
def test_precision_fractions_are_fractions(activation: str, init: str) -> None:
    """Vanishing (subnormal at both roundings of a layer) and exploding nets stay in [0, 1]."""
    config = MLPConfig(depth=30, width=64, activation=activation, init=init, dtype="float16")
    stats = probe(build_mlp(config), input_batch(config, 32))
    values = [getattr(s, c) for s in stats for c in FRACTIONS]
    assert all(0.0 <= v <= 1.0 for v in values if not math.isnan(v))
    assert max(values) > 0.05  # these configs do damage: the columns are not all zero


def test_generic_model_watches_linear_layers_by_default() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    stats = probe(model, torch.randn(32, 8))
    assert [s.layer for s in stats] == [1, 2]
    assert all(math.isnan(s.preact_var) for s in stats)  # no pre-activation for foreign modules
    assert all(s.act_var > 0 and s.grad_var > 0 and s.weight_grad_var > 0 for s in stats)


def test_named_modules_are_the_layers() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
    stats = probe(model, torch.randn(16, 8), modules=[model[1], model[3]])
    assert len(stats) == 2
    assert all(s.act_mean >= 0 for s in stats)  # relu outputs
    assert all(math.isnan(s.weight_grad_var) for s in stats)  # relu has no weight


def test_top_gradient_is_the_projection() -> None:
    """The loss sum(out * R) sends exactly R into the top layer."""
    config = MLPConfig(depth=3, width=32, activation="tanh", init="xavier_normal", dtype="float64")
    model = build_mlp(config)
    out = model(input_batch(config, 64))
    (grad,) = torch.autograd.grad(projection_loss(out), out)
    stats = probe(model, input_batch(config, 64))
    assert stats[-1].grad_var == pytest.approx(float(grad.var(correction=0)), rel=1e-9)


def test_every_n_records_one_pass_in_n() -> None:
    config = MLPConfig(depth=2, width=8, dtype="float64")
    model = build_mlp(config)
    x = input_batch(config, 8)
    with Probe(model, every=3) as p:
        model(x)  # call 0: recorded
        first = p.results()[0].act_var
        model(2.0 * x)  # calls 1, 2: skipped
        model(3.0 * x)
        assert p.results()[0].act_var == first
        model(4.0 * x)  # call 3: recorded
        assert p.results()[0].act_var != first


def test_non_finite_values_are_counted_not_raised() -> None:
    config = MLPConfig(depth=4, width=16, init="standard_normal", dtype="float64")
    model = build_mlp(config)
    with torch.no_grad():
        model.layers[1].linear.weight.fill_(math.inf)
    stats = probe(model, input_batch(config, 8))
    assert math.isfinite(stats[0].act_var)  # layer 1's forward is untouched...
    assert stats[0].nonfinite == 8 * 16  # ...but every gradient reaching it is NaN
    # Layer 2's outputs are all NaN; the gradient reaching it stays finite, since relu's
    # backward masks with (output > 0), which is False for NaN.
    assert math.isnan(stats[1].act_var)
    assert stats[1].nonfinite == 8 * 16
