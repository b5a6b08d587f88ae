"""The finite-width band: where a single seed's per-layer log variance should fall.

Mean-field theory (``core/theory.py``) gives the width-infinite variance ``q_l``. At width
``n`` each layer multiplies the measured variance by a random factor ``1 + O(1/sqrt(n))``,
and the factors compound over depth (Hanin & Rolnick 2018: for relu/He the log squared
norm has variance ``~5 * sum(1/n_l)``). The delta method, linearised around the mean-field
path, gives that variance for any activation (derivation in ``docs/theory.md``):

- ``eta_l``: the linear layer's chi-square, ``Var = (2/n)(1/B + (1-1/B) c_l^2)``;
- ``eps_l``: the activation's second moment over ``n`` units and ``B`` inputs,
  ``Var = (1/n)((kappa_l - 1)/B + (1-1/B) rho_l)`` with ``kappa = E[phi^4]/E[phi^2]^2`` and
  ``rho`` the covariance of ``phi^2`` at two inputs of correlation ``c_l`` (the batch is
  only as many independent samples as its correlation allows);
- a deviation of the scale propagates with the length map's log-slope
  ``g_l = dlog E[phi^2] / dlog q`` (1 for relu: every layer's noise adds up; below 1 for
  tanh: the map forgets), and enters the backward factor ``E[phi'^2]`` with its log-slope.

Expectations use Gauss quadrature (split at 0, where relu has its kink), 1-D and 2-D, for
any registered activation. The backward centre adds the rank-one term of ``docs/theory.md``:
the gradient along the forward signal's own direction, which mean-field's gradient
independence drops and which dominates softplus's backward at depth.
"""

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch

from stability.core.activations import get_activation
from stability.core.config import MLPConfig
from stability.core.inits import sigma_w2
from stability.core.theory import predict

COVERAGE = 0.90  # the band's stated two-sided coverage
Z_COVERAGE = 1.6448536269514722  # standard normal quantile at (1 + COVERAGE) / 2
Q_CLAMP = (1e-12, 1e12)  # shape statistics (kurtosis, slopes) are flat beyond these q
LOG_STEP = 1e-3  # central difference in log q for the log-slopes
BEND_LIMIT = 0.5  # ln units the length map may leave its tangent (summed) before a caveat
RANK_ONE_SHARE = 0.5  # backward rank-one term above this share of the centre: flagged
NORM_PRESERVING = ("orthogonal",)  # square layers: |W a| = |a| exactly
_POINTS = 24  # per side of 0, per dimension (kappa, rho to ~1e-3: enough for a band)


def _rule(points: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights with ``E[f(z)] ~= sum(w f(z))`` for ``z ~ N(0, 1)``, split at 0."""
    x, w = np.polynomial.legendre.leggauss(points)
    half = 6.0  # to 12 sigma
    right = half * (x + 1.0)
    nodes = np.concatenate([-right[::-1], right])
    weights = np.concatenate([w[::-1], w]) * half * np.exp(-0.5 * nodes**2) / math.sqrt(2 * math.pi)
    return nodes, weights


_Z, _W = _rule(_POINTS)
_Z1, _Z2 = (a.ravel() for a in np.meshgrid(_Z, _Z, indexing="ij"))
_W2 = np.outer(_W, _W).ravel()


def _phi_and_slope(activation: str, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    slope_corr: float  # E[phi'(u) phi'(v)] / E[phi'^2]: how backward correlations carry
    c_eff: float = math.nan  # the next layer's input correlation, finite-width part included


def _second_moments(activation: str, qs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E[phi^2] and E[phi'^2] at each of ``qs``, in one call of the activation."""
    phi, slope = _phi_and_slope(activation, np.sqrt(qs)[:, None] * _Z[None, :])
    return phi**2 @ _W, slope**2 @ _W


def _log_slopes(activation: str, q: float) -> tuple[float, float]:
    f, f_slope = _second_moments(activation, q * np.exp([LOG_STEP, -LOG_STEP]))
    g = float(np.log(f[0] / f[1])) / (2 * LOG_STEP)
    g_slope = float(np.log(f_slope[0] / f_slope[1])) / (2 * LOG_STEP) if f_slope.min() > 0 else 0.0
    return g, g_slope


@lru_cache(maxsize=4096)
def layer_shape(activation: str, q: float, c: float) -> LayerShape:
    """The shape statistics at ``(q, c)``; q is clamped where they no longer change."""
    q = min(max(q, Q_CLAMP[0]), Q_CLAMP[1])
    c = min(max(c, -1.0), 1.0)
    s = math.sqrt(q)
    u = s * _Z1
    v = s * (c * _Z1 + math.sqrt(max(1.0 - c * c, 0.0)) * _Z2)
    both, slopes = _phi_and_slope(activation, np.stack([u, v]))
    (pu, pv), (du, dv) = both, slopes
    f = float(_W2 @ pu**2)
    f_slope = float(_W2 @ du**2)
    g, g_slope = _log_slopes(activation, q)
    if f_slope > 0:
        kappa_slope = float(_W2 @ du**4) / f_slope**2
        rho_slope = float(_W2 @ (du**2 * dv**2)) / f_slope**2 - 1.0
    else:  # a constant activation: no backward signal to fluctuate
        kappa_slope, rho_slope = 1.0, 0.0
    return LayerShape(
        kappa=float(_W2 @ pu**4) / f**2,
        kappa_slope=kappa_slope,
        rho=float(_W2 @ (pu**2 * pv**2)) / f**2 - 1.0,
        rho_slope=rho_slope,
        c_next=float(_W2 @ (pu * pv)) / f,
        slope_corr=float(_W2 @ (du * dv)) / f_slope if f_slope > 0 else 0.0,
        g=g,
        g_slope=g_slope,
    )


def _correlation_slope(activation: str, q: float, c: float, step: float = 1e-3) -> float:
    """dc_next/dc: how much of a random correlation the next layer keeps."""
    lo, hi = max(c - step, -1.0), min(c + step, 1.0)
    up = layer_shape(activation, q, round(hi, 6)).c_next
    down = layer_shape(activation, q, round(lo, 6)).c_next
    return (up - down) / (hi - lo)


@dataclass(frozen=True)
class BandLayer:
    """The predicted band of one layer (1-based), in log10, at ``COVERAGE``."""

    layer: int
    preact_lo: float
    preact_hi: float
    grad_lo: float
    grad_hi: float
    preact_sd: float  # sd of log10 preact_var over seeds
    grad_sd: float  # sd of log10 grad_var over seeds
    grad_centre: float  # log10 of the expected grad_var: mean-field plus the rank-one term
    caveat: str  # "" where the band's assumptions hold, else why not


def no_band(layer: int, reason: str) -> BandLayer:
    """A layer with no prediction (NaN everywhere), and the reason in its caveat."""
    nan = math.nan
    return BandLayer(layer, nan, nan, nan, nan, nan, nan, nan, reason)


def predict_band(config: MLPConfig, batch: int) -> list[BandLayer]:
    """Per layer, the band a seed's log10 preact_var and grad_var should fall in."""
    return list(_band(config.activation, config.init, config.depth, config.width, batch))


@lru_cache(maxsize=256)
def _band(activation: str, init: str, depth: int, width: int, batch: int) -> tuple[BandLayer, ...]:
    s2 = sigma_w2(init, width, width)
    mf = predict(MLPConfig(depth=depth, width=width, activation=activation, init=init), batch)
    if s2 is None or not all(math.isfinite(t.preact_var) and t.preact_var > 0 for t in mf):
        reason = "data-driven init: no prediction" if s2 is None else "mean-field variance 0/inf"
        return tuple(no_band(i + 1, reason) for i in range(depth))
    n, b = float(width), float(batch)
    q = [t.preact_var for t in mf]
    shapes, c, spread = [], 0.0, 1.0 / n  # independent N(0, 1) inputs: c = 0 +- 1/sqrt(n)
    for ql in q:
        shape = layer_shape(activation, ql, round(c, 6))
        # Two inputs at width n correlate by c plus a random part of variance ``spread``,
        # which each layer renews ((1 - c^2)^2 / n) and carries with the correlation map's
        # slope: their noises covary at that effective correlation, which no batch averages.
        c_eff = min(math.sqrt(c * c + spread), 1.0)
        noisy = layer_shape(activation, ql, round(c_eff, 6))
        slope = _correlation_slope(activation, ql, c)
        c_next_eff = math.sqrt(shape.c_next**2 + slope**2 * spread)
        shapes.append(replace(shape, rho=noisy.rho, rho_slope=noisy.rho_slope, c_eff=c_next_eff))
        c = shape.c_next
        spread = slope**2 * spread + (1.0 - c * c) ** 2 / n
    var_in = 2.0 / (n * b)  # the input's own mean square; also the projection's at the top
    # A square orthogonal W keeps every norm: its chi-square is exactly 0, not 2/n.
    chi = 0.0 if init in NORM_PRESERVING else 1.0
    fwd, v_fresh = _forward_variances(shapes, n, b, chi)
    single = _forward_variances(shapes, n, 1.0, chi)[0]
    bent = _linearisation_error(activation, s2, q, single)
    # Backward: ln grad_var at layer l deviates by sum_{k>l} (g'_k E_k + zeta_k); E_k is the
    # forward deviation, a sum of the fresh noises j <= k carried by prod g. U_m collects how
    # much a unit deviation at layer m moves every backward factor above it.
    u = [0.0] * (depth + 2)
    for m in range(depth, 0, -1):
        u[m] = shapes[m - 1].g_slope + shapes[m - 1].g * u[m + 1]
    zeta = _backward_noise(shapes, n, b, chi)
    rank_one = _rank_one(activation, q, [t.grad_var for t in mf], shapes, n, s2)
    layers, tail_zeta, tail_fresh = [], 0.0, 0.0
    for layer in range(depth, 0, -1):
        above = fwd[layer] * u[layer + 1] ** 2 if layer < depth else 0.0
        bwd = var_in + tail_zeta + above + tail_fresh
        layers.append(_layer(layer, q[layer - 1], fwd[layer - 1], mf[layer - 1].grad_var,
                             rank_one[layer - 1], bwd, (bent[layer - 1], bent[-1])))  # fmt: skip
        tail_zeta += zeta[layer - 1]
        if layer < depth:
            tail_fresh += v_fresh[layer] * u[layer + 1] ** 2
    return tuple(reversed(layers))


def _forward_variances(
    shapes: list[LayerShape], n: float, b: float, chi: float = 1.0
) -> tuple[list[float], list[float]]:
    """Var(ln preact_var) per layer, and the fresh noise each layer adds (batch of ``b``)."""
    fwd, fresh_all = [], []
    v, g, eta_prev = 0.0, 0.0, 0.0
    for i, sh in enumerate(shapes):
        c_in = math.sqrt(1.0 / n) if i == 0 else shapes[i - 1].c_eff
        # The activation's noise beyond the scale's is measured against a Gaussian W's
        # chi-square (eta); only a Gaussian W adds that chi-square itself (chi = 1).
        eta = (2.0 / n) * (1.0 / b + (1.0 - 1.0 / b) * c_in**2)
        first = 2.0 / (n * b)
        fresh = chi * eta + (first if i == 0 else _eps_perp(shapes[i - 1], n, b, eta_prev))
        v = g**2 * v + fresh
        fwd.append(v)
        fresh_all.append(fresh)
        g, eta_prev = sh.g, eta
    return fwd, fresh_all


def _linearisation_error(
    activation: str, s2: float, q: list[float], single: list[float]
) -> list[float]:
    """Per layer, how far the length map bends away from its tangent over one input's spread.

    The band linearises ``F: ln q -> ln(s2 E[phi^2](q))`` around the mean-field path; a
    single input (batch 1) strays ``sd`` in ln q. Summed over layers, ``|F(x +- 2 sd) - F(x)
    -+ 2 sd F'|`` says in ln units how wrong the tangent is where inputs actually are (gelu
    with kaiming: gain 1/2 at small q, marginal 1 at large q).
    """
    x = np.log(np.clip(np.asarray(q), *Q_CLAMP))
    sd = np.sqrt(np.asarray(single))
    offsets = np.array([-LOG_STEP, LOG_STEP, -2.0, 2.0])
    points = x[:, None] + np.concatenate([[0.0], offsets[:2], 0.0 * offsets[2:]])[None, :]
    points[:, 3:] = x[:, None] + offsets[None, 2:] * sd[:, None]
    f = np.log(s2 * _second_moments(activation, np.exp(points.ravel()))[0]).reshape(points.shape)
    tangent = (f[:, 2] - f[:, 1]) / (2 * LOG_STEP)
    err = np.maximum(
        np.abs(f[:, 3] - f[:, 0] + 2.0 * sd * tangent),
        np.abs(f[:, 4] - f[:, 0] - 2.0 * sd * tangent),
    )
    inside = (np.asarray(q) > Q_CLAMP[0]) & (np.asarray(q) < Q_CLAMP[1]) & np.isfinite(err)
    return list(np.cumsum(np.where(inside, err, 0.0)))


def _backward_noise(shapes: list[LayerShape], n: float, b: float, chi: float = 1.0) -> list[float]:
    """Var of ln of each layer's backward factor: phi'^2 over units and inputs, and W^T's
    chi-square, whose cross-input part grows as the gradients of different inputs keep
    their random O(1/sqrt(n)) correlations (slope E[phi'(u) phi'(v)] / E[phi'^2] per layer).
    """
    out = [0.0] * len(shapes)
    spread = 1.0 / n  # independent projections at the top: correlation 0 +- 1/sqrt(n)
    for i in range(len(shapes) - 1, -1, -1):
        sh = shapes[i]
        chi_square = chi * (2.0 / n) * (1.0 / b + (1.0 - 1.0 / b) * spread)
        shape = (3.0 * (sh.kappa_slope - 1.0) / b + (1.0 - 1.0 / b) * max(sh.rho_slope, 0.0)) / n
        out[i] = chi_square + shape
        spread = sh.slope_corr**2 * spread + 1.0 / n
    return out


def _eps_perp(sh: LayerShape, n: float, b: float, eta: float) -> float:
    """The activation's noise beyond what the scale's own noise (slope g) explains."""
    eps = ((sh.kappa - 1.0) / b + (1.0 - 1.0 / b) * max(sh.rho, 0.0)) / n
    return max(eps - sh.g**2 * eta, 0.0)


def _rank_one(
    activation: str,
    q: list[float],
    grad_mf: list[float],
    shapes: list[LayerShape],
    n: float,
    s2: float,
) -> list[float]:
    """The gradient variance along the forward signal's own direction (``docs/theory.md``).

    ``J_{l+1} a_l = phi'(h) h = g a_{l+1} + p``: the signal's direction maps onto the next
    signal with the length map's log-slope g, plus a remainder p that propagates like any
    random direction (the mean-field gains above it). ``R_l = |J_{l->L} a_l|^2 / n`` obeys
    ``R_l = g^2 R_{l+1} + |p|^2/n * MF_{l+1}``; the random projection puts a 1/n share of
    the top gradient on that direction. Each layer's ``W^T`` also injects, along its input
    signal, the Stein term ``a (s2/n) sum_i phi''(h_i) g_i`` (energy ``s2 E[phi''^2] q G``),
    carried down by the signal's gain ``g^2 E[phi^2]_next / E[phi^2]``. Per element: / n.
    """
    depth = len(q)
    qs = np.asarray(q)
    t = torch.tensor(np.sqrt(qs)[:, None] * _Z[None, :], dtype=torch.float64, requires_grad=True)
    out_t = get_activation(activation).factory()(t)
    (d1,) = torch.autograd.grad(out_t.sum(), t, create_graph=True)
    curv = torch.autograd.grad(d1.sum(), t, allow_unused=True)[0] if d1.requires_grad else None
    phi, slope = out_t.detach().numpy(), d1.detach().numpy()
    bend2 = (curv.detach().numpy() ** 2) @ _W if curv is not None else np.zeros(depth)
    second = list(phi**2 @ _W)
    signal = (qs[:, None] * _Z[None, :] ** 2 * slope**2) @ _W  # E[(h phi'(h))^2]
    remainder = [
        max(float(r) - sh.g**2 * f, 0.0) for r, sh, f in zip(signal, shapes, second, strict=True)
    ]
    out = [0.0] * depth
    r, injected = second[-1], 0.0
    out[-1] = 1.0 / n
    for layer in range(depth - 1, 0, -1):  # layer l (1-based): its next is index ``layer``
        r = shapes[layer].g ** 2 * r + remainder[layer] * grad_mf[layer]
        gain = shapes[layer].g ** 2 * second[layer] / second[layer - 1] if second[layer - 1] else 0
        injected = gain * injected + s2 * float(bend2[layer]) * q[layer] * grad_mf[layer]
        top = r / second[layer - 1] if second[layer - 1] > 0 else 0.0
        out[layer - 1] = (top + injected) / n
    return out


def _layer(layer: int, q: float, var_f: float, grad_mf: float, rank_one: float, var_b: float,
           bent: tuple[float, float]) -> BandLayer:  # fmt: skip
    ln10 = math.log(10.0)
    centre_f = (math.log(q) - var_f / 2.0) / ln10
    expected = grad_mf + rank_one
    centre_b = (math.log(expected) - var_b / 2.0) / ln10 if expected > 0 else -math.inf
    sd_f, sd_b = math.sqrt(var_f) / ln10, math.sqrt(var_b) / ln10
    caveats = []
    below, total = bent  # the forward sees the layers up to here; the backward all of them
    if max(below, total) > BEND_LIMIT:
        caveats.append(
            f"length map bends {below:.2f} up to this layer, {total:.2f} over the network (ln "
            "units) away from its tangent over one input's spread: single inputs stray "
            "non-linearly and the batch variance follows the luckiest, so the linearised "
            "band is too narrow"
            + ("" if below > BEND_LIMIT else " (here for the backward, which crosses them all)")
        )
    if expected > 0 and rank_one / expected > RANK_ONE_SHARE:
        caveats.append(
            "backward dominated by the forward signal's own direction (rank-one term "
            f"{rank_one / expected:.0%} of the gradient variance, added to the band's centre; "
            "mean-field alone predicts too little)"
        )
    z = Z_COVERAGE
    return BandLayer(
        layer=layer,
        preact_lo=centre_f - z * sd_f,
        preact_hi=centre_f + z * sd_f,
        grad_lo=centre_b - z * sd_b,
        grad_hi=centre_b + z * sd_b,
        preact_sd=sd_f,
        grad_sd=sd_b,
        grad_centre=math.log10(expected) if expected > 0 else -math.inf,
        caveat="; ".join(caveats),
    )
