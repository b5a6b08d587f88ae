"""The best initialisation for a depth-L network: on the critical line, as isometric as the
depth allows.

On the critical line chi_1 = 1 the correlation depth scale xi_c is infinite, so signals
and gradients neither merge nor decorrelate with depth (Schoenholz et al. 2017: a network
trains when L is below a few xi_c). The line is a family, one point per sigma_b^2; along it
the Jacobian's normalised spectral variance is ``L * s`` with
``s = r_W + mu_2 / mu_1^2 - 1`` (``jacobian_theory``): small q* makes tanh nearly linear
(s -> r_W), large q* makes it more expressive but spreads the spectrum. The choice: the
largest q* whose ``L * s`` stays within ``budget`` (default 1: no wider than one Gaussian
layer's Marchenko-Pastur spread), with orthogonal weights (r_W = 0; Pennington et al.
2017). Where no point meets the budget (relu: s >= 1 at every q) the least spread point.
"""

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from stability.core.criticality import Q_LOW, critical_sigma_w2, mean_field, slope_moment
from stability.core.jacobian_theory import WEIGHT_VARIANCE

BIAS_GRID = (0.0, *torch.logspace(-6, 0, 31, dtype=torch.float64).tolist())
BUDGET = 1.0


@dataclass(frozen=True)
class Recommendation:
    """What to initialise a depth-``depth`` network with, and the numbers behind it."""

    activation: str
    depth: int
    weights: str
    sigma_w2: float
    sigma_b2: float
    gain: float  # sqrt(sigma_w2): torch.nn.init.orthogonal_(w, gain) or normal_(0, gain/sqrt(n))
    q_star: float
    chi_1: float
    xi_c: float
    jj_mean: float  # predicted mean eigenvalue of J J^T at depth L (chi_1^L)
    jj_normalised_var: float  # L * s
    isometric: bool  # jj_normalised_var <= budget
    why: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def spread_per_layer(activation: str, q: torch.Tensor, weights: str) -> torch.Tensor:
    """``s = r_W + mu_2 / mu_1^2 - 1`` at pre-activation variance q (q* = 0: its limit).

    ``mu_2 >= mu_1^2`` (Cauchy-Schwarz), so s < 0 is rounding (linear, orthogonal: exactly 0).
    """
    q = q.clamp(min=Q_LOW)
    mu1, mu2 = slope_moment(activation, q, 2), slope_moment(activation, q, 4)
    return (WEIGHT_VARIANCE[weights] + mu2 / mu1**2 - 1.0).clamp(min=0.0)


def best_init(
    activation: str, depth: int, weights: str = "orthogonal", budget: float = BUDGET
) -> Recommendation:
    """The critical point (sigma_w^2, sigma_b^2) for ``depth`` layers; see the module doc."""
    if weights not in WEIGHT_VARIANCE:
        raise ValueError(f"unknown weights {weights!r}; expected one of {list(WEIGHT_VARIANCE)}")
    sb2 = torch.tensor(BIAS_GRID, dtype=torch.float64)
    sw2 = critical_sigma_w2(activation, sb2)
    ok = torch.isfinite(sw2)
    if not bool(ok.any()):
        return _no_line(activation, depth, weights)
    points = mean_field(activation, sw2[ok], sb2[ok])
    finite = [p for p in points if math.isfinite(p.q_star)]
    if not finite:
        return _no_line(activation, depth, weights)
    q = torch.tensor([p.q_star for p in finite], dtype=torch.float64)
    spread = depth * spread_per_layer(activation, q, weights)
    inside = [i for i in range(len(finite)) if float(spread[i]) <= budget]
    if inside:
        pick = max(inside, key=lambda i: (finite[i].q_star, -finite[i].sigma_b2))
        why = (
            f"on the critical line (chi_1 = 1, xi_c infinite), the largest q* = "
            f"{finite[pick].q_star:.3g} whose predicted spread of J J^T over {depth} layers "
            f"(normalised variance {float(spread[pick]):.3g}) stays within {budget:g}: "
            "dynamical isometry"
        )
    else:
        pick = min(range(len(finite)), key=lambda i: (float(spread[i]), finite[i].sigma_b2))
        why = (
            f"on the critical line (chi_1 = 1), the least spread point: no sigma_b^2 keeps "
            f"the normalised variance of J J^T within {budget:g} at depth {depth} "
            f"(best {float(spread[pick]):.3g}; {activation} with {weights} weights cannot be "
            "dynamically isometric, only mean-preserving)"
        )
    p = finite[pick]
    return Recommendation(
        activation,
        depth,
        weights,
        p.sigma_w2,
        p.sigma_b2,
        math.sqrt(p.sigma_w2),
        p.q_star,
        p.chi_1,
        p.xi_c,
        p.chi_1**depth,
        float(spread[pick]),
        float(spread[pick]) <= budget,
        why,
    )


def _no_line(activation: str, depth: int, weights: str) -> Recommendation:
    nan = math.nan
    why = (
        f"{activation} has no critical line for sigma_w^2 in [0.1, 20]: no edge of chaos to sit on"
    )
    return Recommendation(
        activation, depth, weights, nan, nan, nan, nan, nan, nan, nan, nan, False, why
    )
