"""Measured depth scales and chi_1: the mean-field maps, run through simulated networks.

Networks of width n with ``W ~ N(0, sigma_w^2 / n)`` and ``b ~ N(0, sigma_b^2)``, several
seeds at once (batched matmuls), carry two inputs and a tangent:

- ``q_l`` (mean squared pre-activation of one input) and ``c_l`` (the two inputs'
  pre-activation correlation), whose distance to the fixed point decays as
  ``exp(-l / xi)``: a least-squares line through ``log |x_l - x*|`` over the layers where
  that distance stands clear of the finite-width noise gives the measured xi;
- a tangent ``t_l = W_l (phi'(h_{l-1}) * t_{l-1})``, whose per-layer squared-norm ratio has
  expectation chi_1 at the fixed point (each ratio is a width-n average of
  ``sigma_w^2 phi'(h)^2`` weighted by the tangent): its mean over layers and seeds is the
  measured chi_1, with a standard error from the spread over seeds.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from stability.core.gauss import derivatives


@dataclass(frozen=True)
class Trace:
    """Per layer (rows) and seed (columns): q of the first input, c, and the tangent's
    squared-norm ratio."""

    q: torch.Tensor
    c: torch.Tensor
    ratio: torch.Tensor


def simulate(
    activation: str,
    sigma_w2: float,
    sigma_b2: float,
    depth: int,
    width: int,
    seeds: int,
    q0: float,
    c0: float,
    pairs: int = 4,
    seed: int = 0,
) -> Trace:
    """``pairs`` input pairs with pre-activation variance ``q0`` and correlation ``c0`` at
    layer 0 (``h_0``; layer 1 sees ``phi(h_0)``), carried ``depth`` layers through ``seeds``
    networks. q and c are averaged over the pairs (both inputs of a pair count for q)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(seeds, width, 2 * pairs + 1, generator=gen, dtype=torch.float64)
    first, other = z[..., :pairs], z[..., pairs : 2 * pairs]
    h = math.sqrt(q0) * torch.cat(
        [first, c0 * first + math.sqrt(max(1.0 - c0 * c0, 0.0)) * other], dim=2
    )
    t = z[..., 2 * pairs :]
    qs, cs, ratios = [], [], []
    for _ in range(depth):
        w = torch.randn(seeds, width, width, generator=gen, dtype=torch.float64)
        w = w * math.sqrt(sigma_w2 / width)
        b = math.sqrt(sigma_b2) * torch.randn(seeds, width, 1, generator=gen, dtype=torch.float64)
        a, s = derivatives(activation, h)
        new_t = w @ (s[..., :1] * t)
        h = w @ a + b
        ratios.append((new_t**2).sum(dim=(1, 2)) / (t**2).sum(dim=(1, 2)))
        t = new_t / new_t.norm(dim=1, keepdim=True).clamp(min=1e-300)
        qs.append((h**2).mean(dim=(1, 2)))
        h1, h2 = h[..., :pairs], h[..., pairs:]
        corr = (h1 * h2).sum(1) / (h1.norm(dim=1) * h2.norm(dim=1)).clamp(min=1e-300)
        cs.append(corr.mean(dim=1))
    return Trace(torch.stack(qs), torch.stack(cs), torch.stack(ratios))


def fitted_depth_scale(distance: torch.Tensor, floor: float, min_points: int = 3) -> float:
    """xi from ``log distance_l ~ a - l / xi`` over the leading layers above ``floor``.

    ``distance`` is the mean over seeds of ``|x_l - x*|`` per layer (layer 1 first). The fit
    stops at the first layer at or below ``floor`` (noise takes over there). NaN with fewer
    than ``min_points`` usable layers, inf for a flat or growing line."""
    usable = 0
    while usable < len(distance) and float(distance[usable]) > floor:
        usable += 1
    if usable < min_points:
        return math.nan
    layers = torch.arange(1, usable + 1, dtype=torch.float64)
    logs = distance[:usable].log()
    slope = float(
        ((layers - layers.mean()) * (logs - logs.mean())).sum()
        / ((layers - layers.mean()) ** 2).sum()
    )
    return math.inf if slope >= 0 else -1.0 / slope


def measured_chi_1(trace: Trace, skip: int = 0) -> tuple[float, float]:
    """(mean, standard error) of the tangent's per-layer ratio after ``skip`` layers: the
    error is the spread of per-seed means over sqrt(seeds) (seeds are independent).

    The error is estimated from ``seeds`` values, so ``(mean - chi_1) / se`` follows
    Student's t with ``seeds - 1`` degrees of freedom, not a normal: judge it with
    ``t_sigmas(seeds - 1)`` (8 seeds: 17.1, not 5, for a 5-sigma tail). Its finite-width
    bias is small: measured ``width * (mean - chi_1)`` between -0.02 and -0.52 for tanh at
    widths 16 to 128 (docs/theory.md), so ``1 / width`` bounds it."""
    per_seed = trace.ratio[skip:].mean(dim=0)
    seeds = per_seed.numel()
    return float(per_seed.mean()), float(
        per_seed.std() / math.sqrt(seeds)
    ) if seeds > 1 else math.nan


def _log_slope(mean_distance: torch.Tensor) -> float:
    """Least-squares slope of ``ln mean_distance`` against the layer (1, 2, ...)."""
    layers = torch.arange(1, len(mean_distance) + 1, dtype=torch.float64)
    centred = layers - layers.mean()
    logs = mean_distance.log()
    return float((centred * (logs - logs.mean())).sum() / (centred**2).sum())


def length_map_decay(
    activation: str,
    sigma_w2: float,
    sigma_b2: float,
    q_star: float,
    layers: int,
    width: int,
    seeds: int,
    eps: float = 1e-4,
    seed: int = 0,
) -> tuple[float, float]:
    """The measured ``-1 / xi_q``: (slope, jackknife standard error) of
    ``ln mean_s d_l`` over layers ``1..layers``, with ``d_l`` the per-network distance of a
    trajectory started at ``q*(1 + eps)`` from one started at ``q*``.

    Both trajectories run through the same networks and inputs (one seed: common random
    numbers), so the finite-width wander of q around q* (~1/sqrt(width), far above
    ``eps``) cancels in ``d_l`` and the approach to the fixed point shows alone. The mean
    over networks is taken before the log: ``d_l`` also carries a zero-mean transverse
    part at finite width (the perturbation leaves the radial direction and grows at chi_1),
    which averages out there but would bias a mean of logs. The error is the jackknife
    over networks (leave one out), which needs no model of the slope's distribution."""
    at = simulate(activation, sigma_w2, sigma_b2, layers, width, seeds, q_star, 0.5, seed=seed)
    up = simulate(
        activation, sigma_w2, sigma_b2, layers, width, seeds, q_star * (1 + eps), 0.5, seed=seed
    )
    d = (up.q - at.q) / (eps * q_star)  # (layers, seeds)
    slope = _log_slope(d.mean(dim=1))
    leave_one_out = torch.tensor(
        [_log_slope(torch.cat([d[:, :i], d[:, i + 1 :]], dim=1).mean(dim=1)) for i in range(seeds)]
    )
    spread = float(((leave_one_out - leave_one_out.mean()) ** 2).sum())
    return slope, math.sqrt((seeds - 1) / seeds * spread)


NORMAL_TAIL_5_SIGMA = 5.733e-7  # two-sided P(|z| > 5) for z ~ N(0, 1)
_LEGENDRE = np.polynomial.legendre.leggauss(64)


def _t_tail(x: float, dof: int) -> float:
    """Two-sided ``P(|T| > x)`` for Student's t: with ``x = sqrt(dof) tan(theta)`` the tail
    is ``2 c int_theta^{pi/2} cos(u)^(dof - 1) du``, smooth, so 64 Gauss-Legendre nodes."""
    theta = math.atan(x / math.sqrt(dof))
    nodes, weights = _LEGENDRE
    half = (math.pi / 2 - theta) / 2
    u = theta + half * (nodes + 1.0)
    log_c = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(math.pi)
    return float(2.0 * math.exp(log_c) * half * (weights * np.cos(u) ** (dof - 1)).sum())


def t_sigmas(dof: int, tail: float = NORMAL_TAIL_5_SIGMA) -> float:
    """How many estimated standard errors make a two-sided ``tail`` for a mean whose error
    was estimated with ``dof`` degrees of freedom (Student's t; bisection). 5 for a known
    error, 17.1 for 7 degrees of freedom, 8.3 for 15."""
    lo, hi = 0.0, 1e8
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _t_tail(mid, dof) > tail else (lo, mid)
    return 0.5 * (lo + hi)
