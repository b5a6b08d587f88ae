"""Free-probability moments of the input-output Jacobian's spectrum (docs/spectrum.md).

``J J^T`` for ``J = D_L W_L ... D_1 W_1`` is, at large width, the free multiplicative
convolution of the ``W_l W_l^T`` and the ``D_l^2`` (Pennington, Schoenholz & Ganguli 2017,
2018). S-transforms multiply under it; to first order in z a measure with mean m and
variance v has ``S(z) = (1/m) (1 - (v / m^2) z + O(z^2))``, so means multiply and
*normalised* variances ``v / m^2`` add:

- ``W W^T``, ``Var(W) = sigma_w^2 / n``: mean sigma_w^2; normalised variance 1 for Gaussian
  weights (Marchenko-Pastur at ratio 1), 0 for orthogonal (all eigenvalues sigma_w^2);
- ``D_l^2``: mean ``mu_1 = E[phi'(h)^2]``, normalised variance ``mu_2 / mu_1^2 - 1`` with
  ``mu_2 = E[phi'(h)^4]``, ``h ~ N(0, q_l)``.

Hence ``mean = prod_l sigma_w^2 mu_1(q_l)`` (chi^L at a fixed point) and
``variance = mean^2 * sum_l (r_W + mu_2(q_l) / mu_1(q_l)^2 - 1)``, i.e. the second moment
is ``chi^{2L} (1 + L s)`` at a fixed point, with s = r_W + mu_2/mu_1^2 - 1.

Every term of that sum is >= 0 (``E[phi'^4] >= E[phi'^2]^2`` by Cauchy-Schwarz), so a
negative one is quadrature rounding and is clamped to 0. For linear layers with orthogonal
weights the variance is exactly 0: ``phi' = 1`` gives ``mu_1 = mu_2 = 1`` and ``r_W = 0``,
and indeed ``J J^T = sigma_w^{2L} I`` (a product of orthogonal matrices is orthogonal). The
quadrature's weights sum to 1 only to rounding, which left ``-2e-14`` before the clamp.

At finite width one network's mean sits below and around this mean: ``core/jacobian_width``.
"""

from dataclasses import asdict, dataclass
from typing import Any

import torch

from stability.core.criticality import Q_LOW, q_map, slope_moment

WEIGHT_VARIANCE = {"gaussian": 1.0, "orthogonal": 0.0}  # normalised variance of W W^T


def normalised_slope_variance(mu1: float, mu2: float) -> float:
    """``mu_2 / mu_1^2 - 1`` (>= 0 by Cauchy-Schwarz; rounding negatives are 0), inf if
    ``mu_1 = 0`` (a dead activation: no backward signal at all)."""
    return max(mu2 / mu1**2 - 1.0, 0.0) if mu1 > 0 else float("inf")


@dataclass(frozen=True)
class MomentPrediction:
    """Predicted mean and variance of the eigenvalues of ``J_l J_l^T`` at one depth."""

    depth: int
    q: float  # pre-activation variance at this layer
    jj_mean: float
    jj_var: float
    normalised_var: float  # jj_var / jj_mean^2: how many "Gaussian layers" of spread

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def predicted_moments(
    activation: str,
    sigma_w2: float,
    sigma_b2: float,
    depth: int,
    weights: str = "gaussian",
    input_second: float = 1.0,
) -> list[MomentPrediction]:
    """Per depth 1..depth, for inputs with ``E[x^2] = input_second`` (the probe's is 1)."""
    r_w = WEIGHT_VARIANCE[weights]
    sw2 = torch.tensor([float(sigma_w2)], dtype=torch.float64)
    sb2 = torch.tensor([float(sigma_b2)], dtype=torch.float64)
    q = sw2 * input_second + sb2
    mean, spread = 1.0, 0.0
    out = []
    for layer in range(1, depth + 1):
        qq = q.clamp(min=Q_LOW)
        mu1 = float(slope_moment(activation, qq, 2)[0])
        mu2 = float(slope_moment(activation, qq, 4)[0])
        mean *= float(sw2[0]) * mu1
        spread += r_w + normalised_slope_variance(mu1, mu2)
        out.append(MomentPrediction(layer, float(q[0]), mean, mean**2 * spread, spread))
        q = q_map(activation, sw2, sb2, q)
    return out
