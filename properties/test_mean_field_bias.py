"""Numerical stability with biases: every predicted column against the probe, sigma_b^2 >= 0.

Mean field with bias variance (``core.theory.predict``): ``q_1 = sigma_w^2 + sigma_b^2``,
``q_l = sigma_w^2 E[phi^2](q_{l-1}) + sigma_b^2``; the output variance ``Var phi(h)``, the
gradient's ``sigma_w^2 E[phi'^2]`` per layer down, and the weight gradient
``batch * E[phi'^2] g * E[a_below^2]`` follow at the new q. Here all four columns the sweep
rows carry (``theory_preact_var``, ``theory_act_var``, ``theory_grad_var``,
``theory_weight_grad_var``) are held against float64 probe passes over many seeds, for
relu and leaky_relu (with the same tolerance), tanh, selu and identity, with sigma_b^2 = 0
as an explicit example (the bias-free rows; ``test_finite_width.py`` checks those too,
against the band).

Tolerance derivation (``check_columns``). Per seed s and layer l let
``D[s, l] = ln(measured / predicted)``. Seeds are independent networks, so the mean over S
seeds has standard error ``sd(D) / sqrt(S)``; with S = 30 the estimated sd is off by at
most ~13 % at 1 sigma, hence ``Z_EST = 6`` (5 sigma plus one for the estimate). The
prediction is a mean, and ``E ln X`` sits below ``ln E X`` by ``Var(ln X) / 2`` (Jensen); for
concave length maps (tanh, selu) the finite-width mean itself sits below mean field by a
second-order term of the same size (``|map''| Var(q_hat) / 2``, with ``Var(q_hat) / q^2``
of the order of Var D), so the bias bound is ``Var D`` (twice Jensen); relu, leaky_relu
and identity have linear maps, where mean field is the exact finite-width mean of q.
The top gradient's random projection is the same for every seed (``PROJECTION_SEED``):
its sample variance (``width * batch`` Gaussian entries, relative sd
``sqrt(2 / (width * batch))``) does not average out and enters unaveraged, times Z_EST.
"""

import math
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from witness import assert_fails_on

from stability.core.config import MLPConfig
from stability.core.model import build_mlp, input_batch
from stability.core.probe import probe
from stability.core.theory import LayerPrediction, gaussian_moments, predict

CHAPTER = "Numerical stability: exploding and vanishing gradients"

SEEDS, BATCH = 30, 32
Z_EST = 6.0  # 5 sigma plus one for the estimated sd (module docstring)
COLUMNS = ("preact_var", "act_var", "grad_var", "weight_grad_var")
PAIRS = {
    "relu": "kaiming_normal",
    "leaky_relu": "kaiming_normal",  # as tight as relu's: same check, same tolerance
    "tanh": "xavier_normal",
    "selu": "lecun_normal",
    "identity": "xavier_normal",
}

Predictor = Callable[[MLPConfig, int], list[LayerPrediction]]

pytestmark = pytest.mark.usefixtures("one_thread")


def network(activation: str, sb2: float, depth: int, width: int, seed: int = 0) -> MLPConfig:
    return MLPConfig(
        depth, width, activation, PAIRS[activation], "float64", seed=seed, bias_var=sb2
    )


@lru_cache(maxsize=16)
def measured(activation: str, sb2: float, depth: int, width: int) -> dict[str, np.ndarray]:
    """Per column, the probe's values, shape (seeds, layers): seeds 0..SEEDS-1, float64."""
    runs = []
    for seed in range(SEEDS):
        cfg = network(activation, sb2, depth, width, seed)
        runs.append(probe(build_mlp(cfg), input_batch(cfg, BATCH)))
    return {c: np.array([[getattr(s, c) for s in run] for run in runs]) for c in COLUMNS}


def check_columns(
    predictor: Predictor, activation: str, sb2: float, depth: int, width: int
) -> None:
    """Every column, every layer: |mean_s D| <= Var D + Z_EST (SE + common) (docstring)."""
    data = measured(activation, sb2, depth, width)
    prediction = predictor(network(activation, sb2, depth, width), BATCH)
    common = math.sqrt(2.0 / (width * BATCH))
    for column in COLUMNS:
        want = np.array([getattr(p, column) for p in prediction])
        d = np.log(data[column] / want)
        assert np.isfinite(d).all(), f"{column}: non-finite ratio"
        var = d.var(axis=0, ddof=1)
        tolerance = var + Z_EST * (np.sqrt(var / SEEDS) + common)
        miss = np.abs(d.mean(axis=0)) / tolerance
        worst = int(np.argmax(miss))
        assert miss[worst] <= 1.0, (
            f"{activation} sigma_b^2={sb2}: {column} layer {worst + 1}: mean ln ratio "
            f"{d.mean(axis=0)[worst]:+.4f}, tolerance {tolerance[worst]:.4f}"
        )


@settings(max_examples=10, deadline=None)
@given(
    activation=st.sampled_from(sorted(PAIRS)),
    sb2=st.floats(0.01, 0.5),
    depth=st.integers(6, 10),
    width=st.sampled_from([64, 128]),
)
@example(activation="leaky_relu", sb2=0.0, depth=8, width=64)
@example(activation="tanh", sb2=0.0, depth=8, width=64)
def test_predicted_columns_with_bias_match(
    activation: str, sb2: float, depth: int, width: int
) -> None:
    """preact_var, act_var, grad_var and weight_grad_var follow mean field with sigma_b^2."""
    check_columns(predict, activation, sb2, depth, width)


def without_bias(config: MLPConfig, batch: int) -> list[LayerPrediction]:
    """Known-bad: the bias-free theory, whatever sigma_b^2 is."""
    return predict(replace(config, bias_var=0.0), batch)


def without_batch(config: MLPConfig, batch: int) -> list[LayerPrediction]:
    """Known-bad: the weight-gradient variance of one sample, not a batch sum."""
    return [replace(p, weight_grad_var=p.weight_grad_var / batch) for p in predict(config, batch)]


def without_mean(config: MLPConfig, batch: int) -> list[LayerPrediction]:
    """Known-bad: output variance as E[phi^2], the activation's mean not subtracted."""
    return [
        replace(p, act_var=gaussian_moments(config.activation, p.preact_var).second)
        for p in predict(config, batch)
    ]


@pytest.mark.parametrize(
    ("variant", "activation", "sb2"),
    [
        (without_bias, "tanh", 0.1),
        (without_bias, "relu", 0.5),
        (without_bias, "leaky_relu", 0.5),
        (without_batch, "relu", 0.0),
        (without_mean, "relu", 0.1),
    ],
)
def test_witness_predicted_columns_with_bias_match(
    variant: Predictor, activation: str, sb2: float
) -> None:
    """Theory without the bias term, a weight gradient without the batch factor, and an
    output variance that forgets relu's mean are each rejected (depth 8, width 64)."""
    assert_fails_on(variant, check_columns, activation, sb2, 8, 64)
