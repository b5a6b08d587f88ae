"""Gaussian statistics of one layer, by quadrature: what the finite-width band is made of.

``core/finite_width.py`` linearises the per-layer log variance around the mean-field path;
every coefficient it needs is an expectation over Gaussian pre-activations at variance
``q`` (and, for two inputs, correlation ``c``): the activation's kurtosis, its covariances
across inputs, the length map's log-slopes and bend. They are computed here once, for any
registered activation, with Gauss-Legendre rules split at 0 (where relu has its kink).
"""

import math
from collections.abc import Sequence
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
    t = torch.from_numpy(np.ascontiguousarray(h, dtype=np.float64)).requires_grad_()
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


def log_slopes(activation: str, qs: np.ndarray) -> np.ndarray:
    """``(K, 4)``: per q the log-slopes ``g``, ``g_slope`` and bends ``g_curv``,
    ``slope_curv`` of ``E[phi^2]`` and ``E[phi'^2]`` in ``ln q`` (central differences), all
    K from one call of the activation: a band asks for every layer's q at once."""
    qs = np.asarray(qs, dtype=np.float64)
    f, f_slope = (m.reshape(len(qs), 3) for m in second_moments(
        activation, (qs[:, None] * np.exp([LOG_STEP, -LOG_STEP, 0.0])[None, :]).ravel()
    ))  # fmt: skip
    live, live_slope = f.min(axis=1) > 0, f_slope.min(axis=1) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.log(f[:, 0] / f[:, 1]) / (2 * LOG_STEP)
        g_slope = np.log(f_slope[:, 0] / f_slope[:, 1]) / (2 * LOG_STEP)
        curv = np.log(f[:, 0] * f[:, 1] / f[:, 2] ** 2) / LOG_STEP**2
        bend = np.log(f_slope[:, 0] * f_slope[:, 1] / f_slope[:, 2] ** 2) / LOG_STEP**2
    return np.stack(
        [g, np.where(live_slope, g_slope, 0.0), np.where(live, curv, 0.0),
         np.where(live_slope, bend, 0.0)], axis=1,
    )  # fmt: skip


def _second_input(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``(K, C, n, n)``: the second input of K points ``q`` at each of their ``(K, C)``
    correlations ``c``, on the grid whose first input is ``sqrt(q) NODES[i]`` (row i)."""
    s = np.sqrt(q)[:, None, None, None]
    c = c[:, :, None, None]
    first, fresh = NODES[:, None], NODES[None, :]
    out: np.ndarray = s * (c * first + np.sqrt(np.maximum(1.0 - c * c, 0.0)) * fresh)
    return out


def _inner(a: np.ndarray) -> np.ndarray:
    """``sum_j w_j a[..., i, j]``: the second input's integral on each row of the grid."""
    out: np.ndarray = a @ WEIGHTS
    return out


@lru_cache(maxsize=4096)
def layer_shape(activation: str, q: float, c: float) -> LayerShape:
    """The shape statistics at ``(q, c)``; q is clamped where they no longer change."""
    q = min(max(q, Q_CLAMP[0]), Q_CLAMP[1])
    c = min(max(c, -1.0), 1.0)
    qs = np.array([q])
    pu, du = phi_and_slope(activation, math.sqrt(q) * NODES[None, :])
    pv, dv = phi_and_slope(activation, _second_input(qs, np.array([[c]]))[:, 0])
    return _shapes(pu, du, pv, dv, log_slopes(activation, qs))[0]


Step = tuple[LayerShape, LayerShape, float]


def band_steps(
    activation: str, points: Sequence[tuple[float, float, float]], slopes: np.ndarray,
    step: float = 1e-3,
) -> list[Step]:  # fmt: skip
    """The finite-width band's three asks of one layer, for K points ``(q, c, c_eff)`` at
    once (the inits of one activation; ``slopes``: their ``log_slopes`` at the clamped q):
    ``layer_shape`` at ``round(c, 6)`` and ``round(c_eff, 6)``, and the correlation map's
    slope ``dc_next/dc`` (central, ``step``: how much of a random correlation the next layer
    keeps), from one call of the activation and its autograd.

    Both inputs lie on one grid: the first is ``sqrt(q) NODES[i]`` whatever ``c``, so it
    is n values, not n^2, and each integral is a sum over the first input of its integral
    over the second."""
    q = np.clip(np.array([p[0] for p in points], dtype=np.float64), *Q_CLAMP)
    c = np.array([p[1] for p in points], dtype=np.float64)
    lo, hi = np.maximum(c - step, -1.0), np.minimum(c + step, 1.0)
    at = np.clip(np.round(np.stack([c, [p[2] for p in points], hi, lo], axis=1), 6), -1.0, 1.0)
    k, n = len(points), len(NODES)
    u = np.sqrt(q)[:, None] * NODES[None, :]  # (K, n)
    v = _second_input(q, at)  # (K, 4, n, n)
    phi, slope = phi_and_slope(activation, np.concatenate([u.ravel(), v.ravel()]))
    pu, du = phi[: k * n].reshape(k, n), slope[: k * n].reshape(k, n)
    pv, dv = phi[k * n :].reshape(v.shape), slope[k * n :].reshape(v.shape)
    # the shape at c and the noisy one at c_eff: 2K points in one pass
    found = _shapes(np.tile(pu, (2, 1)), np.tile(du, (2, 1)),
                    np.concatenate([pv[:, 0], pv[:, 1]]), np.concatenate([dv[:, 0], dv[:, 1]]),
                    np.tile(slopes, (2, 1)))  # fmt: skip
    shape, noisy = found[:k], found[k:]
    weighted = pu * WEIGHTS
    f = (weighted * pu).sum(axis=1) * WEIGHTS.sum()
    up, down = ((weighted * _inner(pv[:, row])).sum(axis=1) / f for row in (2, 3))
    corr_slope = (up - down) / (hi - lo)
    return [(shape[j], noisy[j], float(corr_slope[j])) for j in range(k)]


def _shapes(
    pu: np.ndarray, du: np.ndarray, pv: np.ndarray, dv: np.ndarray, slopes: np.ndarray
) -> list[LayerShape]:
    """The statistics of K points from phi and phi' at their first inputs ``(K, n)`` and
    second inputs ``(K, n, n)`` (``_second_input``), and their ``(K, 4)`` log-slopes."""
    pu2, du2 = pu * pu, du * du
    one = WEIGHTS.sum()  # the second input's weights, summed: what a first-input-only term sees
    f, f_slope, m4, s4, x22 = (
        np.stack([pu2, du2, pu2 * pu2, du2 * du2, pu2 * du2]) @ WEIGHTS
    ) * one
    pv_in, pv2_in, dv_in, dv2_in = (_inner(a) for a in (pv, pv * pv, dv, dv * dv))  # (K, n)
    m22, m11, s22, xr22, s11 = (
        (w * WEIGHTS * x).sum(axis=1)
        for w, x in ((pu2, pv2_in), (pu, pv_in), (du2, dv2_in), (pu2, dv2_in), (du, dv_in))
    )
    live = f_slope > 0  # else a constant activation: no backward signal to fluctuate
    safe = np.where(live, f_slope, 1.0)
    kappa_slope = np.where(live, s4 / safe**2, 1.0)
    rho_slope = np.where(live, s22 / safe**2 - 1.0, 0.0)
    cross = np.where(live, x22 / (f * safe) - 1.0, 0.0)
    cross_rho = np.where(live, xr22 / (f * safe) - 1.0, 0.0)
    slope_corr = np.where(live, s11 / safe, 0.0)
    kappa, rho, c_next = m4 / f**2, m22 / f**2 - 1.0, m11 / f
    columns = zip(kappa, kappa_slope, rho, rho_slope, c_next, slope_corr, cross, cross_rho,
                  slopes, strict=True)  # fmt: skip
    return [
        LayerShape(
            kappa=float(k),
            kappa_slope=float(ks),
            rho=float(r),
            rho_slope=float(rs),
            c_next=float(cn),
            slope_corr=float(sc),
            g=float(g[0]),
            g_slope=float(g[1]),
            g_curv=float(g[2]),
            slope_curv=float(g[3]),
            cross=float(x),
            cross_rho=float(xr),
        )
        for k, ks, r, rs, cn, sc, x, xr, g in columns
    ]
