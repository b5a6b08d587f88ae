"""Gaussian expectations of an activation and its derivatives, in one and two variables.

The correlation map (Poole et al. 2016) needs ``E[phi(u1) phi(u2)]`` for a bivariate normal
pair, and the Jacobian's free-probability moments need ``E[phi'(h)^4]``: neither is among
``theory.Moments``. Both use a split Gauss-Legendre rule on [-TAIL, TAIL] against the normal
density, like ``theory`` does: it has no node at 0, so the kink of relu-like activations
costs accuracy only at the level of one panel, and the tails beyond 12 sigma weigh ~1e-33.
"""

import functools
import math
from collections.abc import Callable

import numpy as np
import torch

from stability.core.activations import get_activation

TAIL = 12.0
POINTS_1D = 128  # per side: 256 nodes
POINTS_2D = 48  # per side and axis: 96 x 96 nodes

Fn = Callable[[torch.Tensor], torch.Tensor]


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


def expect(activation: str, q: float, power_value: int = 0, power_slope: int = 0) -> float:
    """``E[phi(h)^a phi'(h)^b]`` for ``h ~ N(0, q)``."""
    nodes, weights = normal_rule(POINTS_1D)
    value, slope = derivatives(activation, math.sqrt(max(q, 0.0)) * nodes)
    return float((weights * value**power_value * slope**power_slope).sum())


def expect_pair(activation: str, q1: float, q2: float, c: float, slope: bool = False) -> float:
    """``E[f(u1) f(u2)]`` with ``f = phi`` (or ``phi'`` when ``slope``), where (u1, u2) is
    normal with variances q1, q2 and correlation c: ``u1 = sqrt(q1) z1``,
    ``u2 = sqrt(q2) (c z1 + sqrt(1 - c^2) z2)``."""
    c = min(max(c, -1.0), 1.0)
    nodes, weights = normal_rule(POINTS_2D)
    z1, z2 = nodes[:, None], nodes[None, :]
    u1 = math.sqrt(max(q1, 0.0)) * z1.expand(len(nodes), len(nodes))
    u2 = math.sqrt(max(q2, 0.0)) * (c * z1 + math.sqrt(1.0 - c * c) * z2)
    v1, s1 = derivatives(activation, u1)
    v2, s2 = derivatives(activation, u2)
    f1, f2 = (s1, s2) if slope else (v1, v2)
    return float((weights[:, None] * weights[None, :] * f1 * f2).sum())
