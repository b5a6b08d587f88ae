"""Gaussian statistics of one layer, by quadrature: what the finite-width band is made of.

``core/finite_width.py`` linearises the per-layer log variance around the mean-field path;
every coefficient it needs is an expectation over Gaussian pre-activations at variance
``q`` (and, for two inputs, correlation ``c``): the activation's kurtosis, its covariances
across inputs, the length map's log-slopes and bend. They are computed here once, for any
registered activation, with Gauss-Legendre rules split at 0 (where relu has its kink).
"""

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from stability.core.activations import get_activation

Q_CLAMP = (1e-12, 1e12)  # shape statistics (kurtosis, slopes) are flat beyond these q
LOG_STEP = 1e-3  # central difference in log q for the log-slopes
_POINTS = 24  # per side of 0, per dimension (kappa, rho to ~1e-3: enough for a band)


def _rule(points: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights with ``E[f(z)] ~= sum(w f(z))`` for ``z ~ N(0, 1)``, split at 0."""
    x, w = np.polynomial.legendre.leggauss(points)
    half = 6.0  # to 12 sigma
    right = half * (x + 1.0)
    nodes = np.concatenate([-right[::-1], right])
    weights = np.concatenate([w[::-1], w]) * half * np.exp(-0.5 * nodes**2) / math.sqrt(2 * math.pi)
    return nodes, weights


NODES, WEIGHTS = _rule(_POINTS)
_Z1, _Z2 = (a.ravel() for a in np.meshgrid(NODES, NODES, indexing="ij"))
_W2 = np.outer(WEIGHTS, WEIGHTS).ravel()


def phi_and_slope(activation: str, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = torch.tensor(h, dtype=torch.float64, requires_grad=True)
    out = get_activation(activation).factory()(t)
    (slope,) = torch.autograd.grad(out.sum(), t)
    return out.detach().numpy(), slope.numpy()


@dataclass(frozen=True)
class LayerShape:
    """Gaussian statistics of one layer at pre-activation variance q and input correlation c."""

    kappa: float  # E[phi^4] / E[phi^2]^2
    kappa_slope: float  # the same for phi'
    rho: float  # Cov(phi(u)^2, phi(v)^2) / E[phi^2]^2 at correlation c
    rho_slope: float  # the same for phi'
    c_next: float  # E[phi(u) phi(v)] / E[phi^2]: the next layer's input correlation
    g: float  # dlog E[phi^2] / dlog q
    g_slope: float  # dlog E[phi'^2] / dlog q
    g_curv: float  # d^2 log E[phi^2] / dlog q^2: the length map's bend, for the centre
    slope_curv: float  # the same for E[phi'^2]
    cross: float  # Cov(phi^2, phi'^2) / (E[phi^2] E[phi'^2]) at one input
    cross_rho: float  # the same between two inputs of correlation c
    slope_corr: float  # E[phi'(u) phi'(v)] / E[phi'^2]: how backward correlations carry
    c_eff: float = math.nan  # the next layer's input correlation, finite-width part included


def second_moments(activation: str, qs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E[phi^2] and E[phi'^2] at each of ``qs``, in one call of the activation."""
    phi, slope = phi_and_slope(activation, np.sqrt(qs)[:, None] * NODES[None, :])
    return phi**2 @ WEIGHTS, slope**2 @ WEIGHTS


@lru_cache(maxsize=4096)
def _log_slopes(activation: str, q: float) -> tuple[float, float, float, float]:
    f, f_slope = second_moments(activation, q * np.exp([LOG_STEP, -LOG_STEP, 0.0]))
    g = float(np.log(f[0] / f[1])) / (2 * LOG_STEP)
    g_slope = float(np.log(f_slope[0] / f_slope[1])) / (2 * LOG_STEP) if f_slope.min() > 0 else 0.0
    curv = float(np.log(f[0] * f[1] / f[2] ** 2)) / LOG_STEP**2 if f.min() > 0 else 0.0
    bend = f_slope[0] * f_slope[1] / f_slope[2] ** 2 if f_slope.min() > 0 else 1.0
    return g, g_slope, curv, float(np.log(bend)) / LOG_STEP**2


def _pair(q: float, c: float) -> tuple[float, np.ndarray]:
    """The clamped q, and the ``(2, nodes)`` pre-activations of two inputs at ``(q, c)``."""
    q = min(max(q, Q_CLAMP[0]), Q_CLAMP[1])
    c = min(max(c, -1.0), 1.0)
    s = math.sqrt(q)
    u = s * _Z1
    v = s * (c * _Z1 + math.sqrt(max(1.0 - c * c, 0.0)) * _Z2)
    return q, np.stack([u, v])


@lru_cache(maxsize=4096)
def c_next(activation: str, q: float, c: float) -> float:
    """``layer_shape(activation, q, c).c_next``, bit for bit, from the forward alone: the
    correlation map's slope needs only this, not the slopes' autograd and the log-slopes'
    second moments (half of the finite-width band's time, issue 27)."""
    _, h = _pair(q, c)
    with torch.no_grad():
        both = get_activation(activation).factory()(torch.tensor(h, dtype=torch.float64))
    pu, pv = both.numpy()
    return float(_W2 @ (pu * pv)) / float(_W2 @ pu**2)


@lru_cache(maxsize=4096)
def layer_shape(activation: str, q: float, c: float) -> LayerShape:
    """The shape statistics at ``(q, c)``; q is clamped where they no longer change."""
    q, h = _pair(q, c)
    both, slopes = phi_and_slope(activation, h)
    return _shape(activation, q, both, slopes)


def band_step(
    activation: str, q: float, c: float, c_eff: float, step: float = 1e-3
) -> tuple[LayerShape, LayerShape, float]:
    """The finite-width band's three asks of one layer, bit for bit, from one call of the
    activation and its autograd: ``layer_shape`` at ``round(c, 6)`` and ``round(c_eff, 6)``,
    and ``correlation_slope(activation, q, c)``.

    The first input ``u`` is the same at every ``c``, so the points are ``u`` and each
    ``c``'s second input, ``(5, nodes)``. Elementwise kernels give each element the same bits
    at any length that is a multiple of the vector width and below the parallel grain (here
    5 x 2304 float64: all vectorised, one thread), as at the ``(2, nodes)`` of one shape."""
    lo, hi = max(c - step, -1.0), min(c + step, 1.0)
    pairs = [_pair(q, x) for x in (round(c, 6), round(c_eff, 6), round(hi, 6), round(lo, 6))]
    q = pairs[0][0]
    both, slopes = phi_and_slope(activation, np.stack([pairs[0][1][0], *(h[1][1] for h in pairs)]))
    shape, noisy = (_shape(activation, q, both[[0, k]], slopes[[0, k]]) for k in (1, 2))
    f = float(_W2 @ both[0] ** 2)
    up, down = (float(_W2 @ (both[0] * both[k])) / f for k in (3, 4))
    return shape, noisy, (up - down) / (hi - lo)


def _shape(activation: str, q: float, both: np.ndarray, slopes: np.ndarray) -> LayerShape:
    """The statistics from phi and phi' at the ``(2, nodes)`` points of ``_pair(q, c)``."""
    (pu, pv), (du, dv) = both, slopes
    f = float(_W2 @ pu**2)
    f_slope = float(_W2 @ du**2)
    g, g_slope, g_curv, slope_curv = _log_slopes(activation, q)
    if f_slope > 0:
        kappa_slope = float(_W2 @ du**4) / f_slope**2
        rho_slope = float(_W2 @ (du**2 * dv**2)) / f_slope**2 - 1.0
        cross = float(_W2 @ (pu**2 * du**2)) / (f * f_slope) - 1.0
        cross_rho = float(_W2 @ (pu**2 * dv**2)) / (f * f_slope) - 1.0
    else:  # a constant activation: no backward signal to fluctuate
        kappa_slope, rho_slope, cross, cross_rho = 1.0, 0.0, 0.0, 0.0
    return LayerShape(
        kappa=float(_W2 @ pu**4) / f**2,
        kappa_slope=kappa_slope,
        rho=float(_W2 @ (pu**2 * pv**2)) / f**2 - 1.0,
        rho_slope=rho_slope,
        c_next=float(_W2 @ (pu * pv)) / f,
        slope_corr=float(_W2 @ (du * dv)) / f_slope if f_slope > 0 else 0.0,
        g=g,
        g_slope=g_slope,
        g_curv=g_curv,
        slope_curv=slope_curv,
        cross=cross,
        cross_rho=cross_rho,
    )


def correlation_slope(activation: str, q: float, c: float, step: float = 1e-3) -> float:
    """dc_next/dc: how much of a random correlation the next layer keeps."""
    lo, hi = max(c - step, -1.0), min(c + step, 1.0)
    up = c_next(activation, q, round(hi, 6))
    down = c_next(activation, q, round(lo, 6))
    return (up - down) / (hi - lo)
