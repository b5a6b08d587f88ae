"""Where one finite-width network's mean eigenvalue of ``J J^T`` falls (docs/spectrum.md).

Free probability (``core/jacobian_theory.py``) is width-infinite. At width ``n`` the mean
eigenvalue ``T_L = tr(J_L J_L^T) / n`` of one network is a product of per-layer random
factors ``T_l / T_{l-1}`` whose expectation is free probability's ``sigma_w^2 mu_1(q_l)``,
so ``E[T_L]`` is the prediction (up to the inputs' norm, below) while ``ln T_L`` sits below
``ln E[T_L]`` by half its variance and spreads by its sd (the finite-width effect of
``core/finite_width.py``).

Per layer, with ``T_l = sum_i phi'(h_i)^2 |J_{l-1}^T w_i|^2`` and ``A = J_{l-1} J_{l-1}^T``
of normalised eigenvalue variance ``s_{l-1}`` (free probability's, ``s_0 = 0``),
``kappa = mu_2 / mu_1^2``:

- slopes: ``n`` units' ``phi'^2`` average to ``mu_1`` with relative variance
  ``(kappa - 1) / n`` per input; over a batch of ``B`` inputs at correlation ``c_l`` the
  part ``rho'(c)`` (the covariance of ``phi'^2`` at two inputs, ``finite_width.layer_shape``)
  is shared: ``((kappa - 1) / B + (1 - 1/B) rho') / n``;
- weights: a Gaussian row gives ``w^T A w`` relative variance ``2 tr(A^2) / tr(A)^2 =
  2 (1 + s) / n``, so the layer adds ``2 kappa (1 + s) / n^2`` at one input; orthogonal
  rows sum to ``tr A`` exactly, leaving ``2 (kappa - 1) s / n^2`` (0 for linear:
  ``J J^T = I``). The weights are the same for every input, so across a batch this term
  is shared as far as the slopes are: ``kappa`` becomes ``kappa / B + (1 - 1/B)(1 + rho')``
  (Gaussian), ``kappa - 1`` becomes ``(kappa - 1) / B + (1 - 1/B) rho'`` (orthogonal),
  taking the inputs' ``A`` as alike (an upper bound). ``(1 + s) / n`` is capped at 1
  (``tr(A^2) <= tr(A)^2``): past ``L s ~ n`` a few directions carry the trace.

- the inputs' own mean square: ``|x|^2 / n`` has ``Var ln = 2 / n`` per input and moves
  ``q_1``; the length map carries a deviation with its log-slope ``g`` (it forgets it over
  ``1 / (1 - g)`` layers, never for relu) and each ``mu_1(q_l)`` follows with
  ``g' = dln mu_1 / dln q`` (``layer_shape``): ``(sum_l g'_l prod_{k<l} g_k)^2 2 / (n B)``.
  0 for linear and relu (``g' = 0``); at tanh's isometric point about 0.9^2 of it. It
  also moves the mean: ``ln |x|^2 / n`` averages ``-1/n``, so with ``R = sum_l ...`` as
  above ``E[T_L]`` is free probability's times ``exp((R^2 - R) / n)`` (+2.7 % for tanh at
  width 64: the +0.011 decades measured over 32 seeds). The
  per-layer forward noise of a Gaussian ``W`` (its chi-square moves ``q_l`` too) is left
  out: where it would count (tanh, Gaussian) the band is already conservative.

``Var(ln T_L)`` is the sum over layers and the input term. Over 32 seeds at widths 64 and
128, depths 16-64 (``scripts/spectrum_width.py``, table in ``docs/spectrum.md``) the
measured sd is 0.72-1.45x the predicted, and the measured offset agrees up to ``L ~ n/2``.

Against ``finite_width.predict_band``: its layer-1 backward band is ``ln`` of the gradient
variance at the first layer's *output* under one random projection per input. Add the
input layer (``W_1``, ``D_1``: the band of a depth ``L + 1`` network) and remove the
projection's own variance given the network (``2 (1 + s_L) / (n B)``, which the trace
averages away) and it is this quantity; the band's cross-input terms carry the
``L^2 / n^2`` that survives the trace.
"""

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from stability.core.criticality import Q_LOW, c_map, q_map, slope_moment
from stability.core.jacobian_theory import WEIGHT_VARIANCE, normalised_slope_variance
from stability.core.layer_shape import layer_shape

LN10 = math.log(10.0)


@dataclass(frozen=True)
class MeanBand:
    """At one depth: the spread of ``ln`` of one network's pooled mean eigenvalue."""

    depth: int
    var_ln: float  # Var over networks of ln(jj_mean)
    log10_offset: float  # E[log10 jj_mean] - log10(predicted): (shift - var_ln / 2) / ln 10
    log10_sd: float  # sd over networks of log10 jj_mean
    shift: float = 0.0  # ln E[jj_mean] - ln(predicted): the inputs' norm (tanh: > 0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def layer_variance(kappa: float, rho: float, s: float, width: int, batch: int, law: str) -> float:
    """Var of ln of one layer's factor ``T_l / T_{l-1}`` for the batch-pooled trace."""
    n, b = float(width), float(batch)
    excess, shared = max(kappa - 1.0, 0.0), max(rho, 0.0)  # E[phi'^4] >= E[phi'^2]^2
    slopes = (excess / b + (1.0 - 1.0 / b) * shared) / n
    # The weights' spread reaches the pooled trace through the slopes: at one input with
    # E[phi'^4] / mu_1^2 = kappa, across two with E[phi'(u)^2 phi'(v)^2] / mu_1^2 = 1 + rho.
    if WEIGHT_VARIANCE[law] > 0:  # Gaussian rows: each one's chi-square-like spread
        rows = 2.0 * min((1.0 + s) / n, 1.0) / n
        weights = rows * (kappa / b + (1.0 - 1.0 / b) * (1.0 + shared))
    else:  # orthogonal rows: only the slopes' reweighting of an exact sum
        rows = 2.0 * min(s / n, 1.0) / n
        weights = rows * (excess / b + (1.0 - 1.0 / b) * shared)
    return slopes + weights


def mean_band(
    activation: str,
    sigma_w2: float,
    sigma_b2: float,
    depth: int,
    width: int,
    batch: int,
    weights: str = "gaussian",
    input_second: float = 1.0,
) -> list[MeanBand]:
    """Per depth 1..depth: how far one network's log10 mean eigenvalue of ``J J^T`` sits
    from free probability's (on average, and its sd), for independent N(0, E[x^2]) inputs."""
    sw2, sb2 = one(sigma_w2), one(sigma_b2)
    q = max(float(sigma_w2) * input_second + float(sigma_b2), Q_LOW)
    c, s, total, out = 0.0, 0.0, 0.0, []
    # The inputs' own mean square (Var ln = 2 / n per input) moves q_1; d ln q_l / d ln q_1
    # is ``carried``, and each layer's mu_1 follows with its log-slope: ``reach`` sums them.
    carried, reach = (q - float(sigma_b2)) / q, 0.0
    for layer in range(1, depth + 1):
        mu1 = float(slope_moment(activation, one(q), 2)[0])
        mu2 = float(slope_moment(activation, one(q), 4)[0])
        kappa = mu2 / mu1**2 if mu1 > 0 else math.inf
        # Two independent inputs correlate by 0 +- 1/sqrt(n): no batch averages that part.
        c_eff = min(math.sqrt(c * c + 1.0 / width), 1.0)
        shape = layer_shape(activation, q, round(c_eff, 6))
        rho = shape.rho_slope if mu1 > 0 else 0.0
        total += layer_variance(kappa, rho, s, width, batch, weights)
        reach += shape.g_slope * carried
        var = total + reach**2 * 2.0 / (width * batch)
        sd = math.sqrt(var) if math.isfinite(var) else math.inf
        # E ln(|x|^2 / n E[x^2]) = -1/n, Var 2/n: E[exp(reach d)] = exp((reach^2 - reach) / n)
        shift = (reach**2 - reach) / width
        out.append(MeanBand(layer, var, (shift - var / 2.0) / LN10, sd / LN10, shift))
        s += WEIGHT_VARIANCE[weights] + normalised_slope_variance(mu1, mu2)
        q_next = max(float(q_map(activation, sw2, sb2, one(q))[0]), Q_LOW)
        carried *= shape.g * (q_next - float(sigma_b2)) / q_next
        c = min(float(c_map(activation, sw2, sb2, q, c)[0]) * q / q_next, 1.0)
        q = q_next
    return out


def one(value: float) -> torch.Tensor:
    """A one-element float64 tensor: the criticality functions take batches."""
    return torch.tensor([float(value)], dtype=torch.float64)
