"""Mean-field predictions of per-layer variance, forward and backward.

Forward (Poole et al. 2016): ``q_l = sigma_w^2 * E[phi(sqrt(q_{l-1}) z)^2] + sigma_b^2`` with
``z ~ N(0, 1)``; layer 1 sees the input directly, ``q_1 = sigma_w^2 * E[x^2] + sigma_b^2`` with
``E[x^2] = 1``. ``sigma_b^2`` is the config's ``bias_var``: the probe draws each unit's bias
once per network from ``N(0, bias_var)``, so over the units and the batch a layer's
pre-activation ``W a + b`` has variance ``q`` (the bias draw included), and its mean over
units is 0 up to ``O(sqrt(bias_var / width))``. This is the recursion of
``criticality.q_map`` started from the input rather than from a fixed point (a test holds
the two to each other); it stays here, on closed forms where they exist, so that at
``bias_var = 0`` every number is the one it was (adding ``0.0`` is exact).
Backward (Schoenholz et al. 2017): the gradient variance at a layer's output is multiplied,
going down one square layer, by ``sigma_w^2 * E[phi'(h)^2]``, ``h ~ N(0, q_l)``. The top
gradient has variance 1 (the probe's random-projection loss). Expectations use
Gauss-Hermite quadrature, except where a closed form exists (identity, relu, leaky_relu).
"""

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from stability.core.activations import LEAKY_RELU_SLOPE, get_activation
from stability.core.config import MLPConfig
from stability.core.inits import sigma_w2

QUADRATURE_POINTS_PER_SIDE = 128
LINEAR_REGIME_Q = 1e-12  # below this pre-activation variance, phi(h) = phi'(0) h to 1e-12
TAIL = 12.0  # N(0,1) mass beyond 12 sigma is ~1e-33: negligible


def _split_legendre_rule() -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights with ``E[f(z)] ~= sum(w * f(nodes))`` for ``z ~ N(0, 1)``."""
    x, w = np.polynomial.legendre.leggauss(QUADRATURE_POINTS_PER_SIDE)
    half = TAIL / 2.0
    right = half * (x + 1.0)  # (0, TAIL), never 0 itself
    nodes = np.concatenate([-right[::-1], right])
    weights = np.concatenate([w[::-1], w]) * half
    return nodes, weights * np.exp(-0.5 * nodes**2) / math.sqrt(2.0 * math.pi)


_NODES, _WEIGHTS = _split_legendre_rule()


@dataclass(frozen=True)
class Moments:
    """Gaussian expectations of an activation at pre-activation variance q."""

    second: float  # E[phi(h)^2]
    mean: float  # E[phi(h)]
    slope_second: float  # E[phi'(h)^2]

    @property
    def variance(self) -> float:
        """Var[phi(h)]: what a layer's output variance should be."""
        return self.second - self.mean**2


def _piecewise_linear(q: float, negative_slope: float) -> Moments:
    # phi(h) = h for h > 0, a*h below: half the mass on each side of 0.
    a = negative_slope
    mean = math.sqrt(q / (2.0 * math.pi)) * (1.0 - a)
    return Moments(second=q * (1.0 + a * a) / 2.0, mean=mean, slope_second=(1.0 + a * a) / 2.0)


@lru_cache(maxsize=8192)
def gaussian_moments(activation: str, q: float) -> Moments:
    """E[phi^2], E[phi], E[phi'^2] for ``h ~ N(0, q)``; closed form where one exists.

    Cached (as ``layer_shape``): the finite-width band and the sweep's mean field ask for
    the same ``q`` path of every (activation, init), a quadrature with autograd per layer."""
    get_activation(activation)  # validate the name first
    if not math.isfinite(q):
        return Moments(math.nan, math.nan, math.nan)
    if activation == "identity":
        return Moments(second=q, mean=0.0, slope_second=1.0)
    if activation == "relu":
        return _piecewise_linear(q, 0.0)
    if activation == "leaky_relu":
        return _piecewise_linear(q, LEAKY_RELU_SLOPE)
    act = get_activation(activation)
    if q < LINEAR_REGIME_Q and act.value_at_0 == 0.0 and act.cubic_at_0 is not None:
        # Smooth at 0 (known Taylor series) and deep in the linear regime: the O(q^2) terms
        # are below float64 resolution, while evaluating phi itself can cancel
        # (4*sigmoid(h) - 2 is exactly 0 for |h| < 1e-17).
        return Moments(second=act.slope_at_0**2 * q, mean=0.0, slope_second=act.slope_at_0**2)
    h = torch.tensor(math.sqrt(q) * _NODES, dtype=torch.float64, requires_grad=True)
    phi = get_activation(activation).factory()
    out = phi(h)
    (slope,) = torch.autograd.grad(out.sum(), h)
    w = torch.tensor(_WEIGHTS, dtype=torch.float64)
    values = out.detach()
    return Moments(
        second=float((w * values**2).sum()),
        mean=float((w * values).sum()),
        slope_second=float((w * slope**2).sum()),
    )


@dataclass(frozen=True)
class LayerPrediction:
    """Mean-field prediction for one layer (1-based)."""

    layer: int
    preact_var: float
    act_var: float
    grad_var: float  # variance of dLoss/d(layer output)
    weight_grad_var: float  # variance of dLoss/dW per entry, for a batch of ``batch``


def predict(config: MLPConfig, batch: int = 1) -> list[LayerPrediction]:
    """Per-layer predictions for the probe network of ``config`` (NaN for data-driven inits)."""
    s2 = sigma_w2(config.init, config.width, config.width)
    if s2 is None:
        nan = math.nan
        return [LayerPrediction(i + 1, nan, nan, nan, nan) for i in range(config.depth)]
    sb2 = float(config.bias_var)  # > 0 only with biases (MLPConfig checks)
    preact: list[float] = []
    moments: list[Moments] = []
    input_second = 1.0  # E[x^2] of the probe input
    for _ in range(config.depth):
        q = s2 * input_second + sb2
        m = gaussian_moments(config.activation, q)
        preact.append(q)
        moments.append(m)
        input_second = m.second
    grads = [0.0] * config.depth
    g = 1.0
    for i in reversed(range(config.depth)):
        grads[i] = g
        g = s2 * moments[i].slope_second * g
    rows = []
    for i in range(config.depth):
        below_second = 1.0 if i == 0 else moments[i - 1].second
        delta_var = moments[i].slope_second * grads[i]
        rows.append(
            LayerPrediction(
                layer=i + 1,
                preact_var=preact[i],
                act_var=moments[i].variance,
                grad_var=grads[i],
                weight_grad_var=batch * delta_var * below_second,
            )
        )
    return rows


def per_layer_gain(activation: str, init: str, width: int, q: float = 1.0) -> tuple[float, float]:
    """(forward, backward) variance factor of one square layer at pre-activation variance q.

    Forward: ``sigma_w^2 * E[phi^2] / q``; backward: ``sigma_w^2 * E[phi'^2]``. Both are 1 for
    a variance-preserving pair (identity+xavier, relu+kaiming at any q).
    """
    s2 = sigma_w2(init, width, width)
    if s2 is None:
        return math.nan, math.nan
    m = gaussian_moments(activation, q)
    return s2 * m.second / q, s2 * m.slope_second
