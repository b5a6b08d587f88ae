"""The quadrature rule and activation derivatives behind ``criticality``'s expectations.

The correlation map (Poole et al. 2016) needs ``E[phi(u1) phi(u2)]`` for a bivariate normal
pair, and the Jacobian's free-probability moments need ``E[phi'(h)^4]``: neither is among
``theory.Moments``. Both use a split Gauss-Legendre rule on [-TAIL, TAIL] against the normal
density, like ``theory`` does: it has no node at 0, so the kink of relu-like activations
costs accuracy only at the level of one panel, and the tails beyond 12 sigma weigh ~1e-33.
"""

import functools
import math

import numpy as np
import torch

from stability.core.activations import get_activation

TAIL = 12.0
POINTS_1D = 128  # per side: 256 nodes
POINTS_2D = 48  # per side and axis: 96 x 96 nodes


@functools.cache
def normal_rule(per_side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights with ``E[f(z)] ~= sum(w * f(nodes))``, ``z ~ N(0, 1)``, float64."""
    x, w = np.polynomial.legendre.leggauss(per_side)
    half = TAIL / 2.0
    right = half * (x + 1.0)
    nodes = np.concatenate([-right[::-1], right])
    weights = np.concatenate([w[::-1], w]) * half * np.exp(-0.5 * nodes**2) / math.sqrt(2 * math.pi)
    return torch.tensor(nodes), torch.tensor(weights)


def values(activation: str, h: torch.Tensor) -> torch.Tensor:
    """``phi(h)`` elementwise, without autograd."""
    with torch.no_grad():
        out: torch.Tensor = get_activation(activation).factory()(h)
    return out


def derivatives(activation: str, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(phi(h), phi'(h))`` elementwise, by autograd (every registered activation is
    elementwise, so the gradient of the sum is the derivative at each point)."""
    phi = get_activation(activation).factory()
    x = h.detach().requires_grad_(True)
    with torch.enable_grad():
        out = phi(x)
        (slope,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), slope.detach()
