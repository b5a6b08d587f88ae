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

The centre is the mean at finite width, to second order: the length map's bend moves
the mean (``_forward_shift``; tanh's falls, silu's rises), the measurement subtracts the
batch mean, each backward factor is taken at every input's own scale (``_backward_shift``),
the top gradient is the probe's one fixed projection (``_top``), and the backward adds the
rank-one term of ``docs/theory.md`` beyond mean-field's share: the gradient along the
forward signal's own direction, which dominates softplus's backward at depth. The layer
statistics (quadrature, any registered activation) live in ``core/layer_shape.py``.

What it does not model: the backward assumes gradient independence (the backward's
weights independent of the forward's). The tied network's seeds spread ~0.7x that for
tanh and selu at depth 20 (the band is conservative there) and ~1.1x for relu.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from stability.core.band_path import walk
from stability.core.band_terms import linearisation_error, rank_one, signal_caveat
from stability.core.config import MLPConfig
from stability.core.inits import sigma_w2
from stability.core.layer_shape import (
    LayerShape,
)
from stability.core.probe import PROJECTION_SEED
from stability.core.theory import LayerPrediction, predict

COVERAGE = 0.90  # the band's stated two-sided coverage
Z_COVERAGE = 1.6448536269514722  # standard normal quantile at (1 + COVERAGE) / 2
BEND_LIMIT = 0.5  # ln units the length map may leave its tangent (summed) before a caveat
RANK_ONE_SHARE = 0.5  # backward rank-one term above this share of the centre: flagged
NORM_PRESERVING = ("orthogonal",)  # square layers: |W a| = |a| exactly


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
    return predict_bands([config], batch)[0]


BandKey = tuple[str, str, int, int, int]  # activation, init, depth, width, batch
CACHE_SIZE = 256  # bands kept (a sweep asks once per cell; its grid has a few per stack)
_BANDS: dict[BandKey, tuple[BandLayer, ...]] = {}


def predict_bands(configs: Sequence[MLPConfig], batch: int) -> list[list[BandLayer]]:
    """``predict_band`` of each config; those of one activation and shape walk the layers
    together (``core/band_path.py``), one quadrature call per layer for all their inits.
    Bands depend on none of seed, dtype or device, and are kept (``CACHE_SIZE``)."""
    keys = [(c.activation, c.init, c.depth, c.width, batch) for c in configs]
    found = {k: _BANDS[k] for k in keys if k in _BANDS}
    groups: dict[tuple[str, int, int], list[str]] = {}
    for act, init, depth, width, _ in dict.fromkeys(k for k in keys if k not in found):
        groups.setdefault((act, depth, width), []).append(init)
    for (act, depth, width), inits in groups.items():
        for init, band in zip(inits, _bands(act, inits, depth, width, batch), strict=True):
            found[(act, init, depth, width, batch)] = band
    for key, band in found.items():
        _BANDS.pop(key, None)  # re-inserted: the most recently asked are kept
        _BANDS[key] = band
    while len(_BANDS) > CACHE_SIZE:
        del _BANDS[next(iter(_BANDS))]
    return [list(found[k]) for k in keys]


def _bands(
    activation: str, inits: Sequence[str], depth: int, width: int, batch: int
) -> list[tuple[BandLayer, ...]]:
    """The bands of several inits of one activation and shape, their layers walked together."""
    mean_fields: list[tuple[float, list[LayerPrediction]] | str] = []
    for init in inits:
        s2 = sigma_w2(init, width, width)
        mf = predict(MLPConfig(depth=depth, width=width, activation=activation, init=init), batch)
        if s2 is None:
            mean_fields.append("data-driven init: no prediction")
        elif not all(math.isfinite(t.preact_var) and t.preact_var > 0 for t in mf):
            mean_fields.append("mean-field variance 0/inf")
        else:
            mean_fields.append((s2, mf))
    paths = [[t.preact_var for t in m[1]] for m in mean_fields if not isinstance(m, str)]
    shapes = iter(walk(activation, paths, width))
    return [
        tuple(no_band(i + 1, m) for i in range(depth))
        if isinstance(m, str)
        else _band(activation, init, *m, next(shapes), width, batch)
        for init, m in zip(inits, mean_fields, strict=True)
    ]


def _band(
    activation: str,
    init: str,
    s2: float,
    mf: list[LayerPrediction],
    shapes: list[LayerShape],
    width: int,
    batch: int,
) -> tuple[BandLayer, ...]:
    """One init's band from its mean field (``s2``, ``mf``) and its walked layer shapes."""
    n, b, depth = float(width), float(batch), len(mf)
    q = [t.preact_var for t in mf]
    # A square orthogonal W keeps every norm: its chi-square is exactly 0, not 2/n.
    chi = 0.0 if init in NORM_PRESERVING else 1.0
    fwd, v_fresh = _forward_variances(shapes, n, b, chi)
    single = _forward_variances(shapes, n, 1.0, chi)[0]
    bent = linearisation_error(activation, s2, q, single)
    # Backward: ln grad_var at layer l deviates by sum_{k>l} (g'_k E_k + zeta_k); E_k is the
    # forward deviation, a sum of the fresh noises j <= k carried by prod g. U_m collects how
    # much a unit deviation at layer m moves every backward factor above it.
    u = [0.0] * (depth + 2)
    for m in range(depth, 0, -1):
        u[m] = shapes[m - 1].g_slope + shapes[m - 1].g * u[m + 1]
    zeta, cross = _backward_noise(shapes, n, b, chi)
    along_signal = rank_one(activation, q, [t.grad_var for t in mf], shapes, n, s2)
    d, measure = _forward_shift(shapes, single, n, b, chi)
    top = _top(width, batch)
    signal = signal_caveat(activation, q)
    layers, tail_zeta, tail_fresh, tail_shift, tail_cross = [], 0.0, 0.0, 0.0, 0.0
    for layer in range(depth, 0, -1):
        above = fwd[layer] * u[layer + 1] ** 2 if layer < depth else 0.0
        bwd = tail_zeta + tail_cross + above + tail_fresh
        # ln E[preact_var] and E[ln grad_var] at width n (``_forward_shift``, ``_backward_shift``)
        q_mean = q[layer - 1] * math.exp(d[layer - 1] + measure[layer - 1])
        shift_b = top + tail_shift - tail_zeta / 2.0
        layers.append(_layer(layer, q_mean, fwd[layer - 1], mf[layer - 1].grad_var,
                             along_signal[layer - 1], (bwd, shift_b), (bent[layer - 1], bent[-1]),
                             signal))  # fmt: skip
        # zeta_k and the same layer's eps_perp_k (which moves every factor above k by U_{k+1})
        # share layer k's units: their covariance counts once per pair.
        tail_zeta += zeta[layer - 1]
        tail_cross += 2.0 * u[layer + 1] * cross[layer - 1]
        tail_shift += _backward_shift(
            shapes[layer - 1], d[layer - 1], single[layer - 1] - chi * 2.0 / n, fwd[layer - 1]
        )
        if layer < depth:
            tail_fresh += v_fresh[layer] * u[layer + 1] ** 2
    return tuple(reversed(layers))


@lru_cache(maxsize=64)
def _top(width: int, batch: int) -> float:
    """ln of the top gradient's measured variance: the probe's projection ``R`` is one fixed
    draw (``projection_loss``), the same for every seed, so its sample variance is not noise
    across seeds but a known offset of every layer's gradient (sd ``sqrt(2/(nB))`` in ln)."""
    gen = torch.Generator().manual_seed(PROJECTION_SEED)
    r = torch.randn((batch, width), generator=gen).double()
    return math.log(float(r.var(unbiased=False)))


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


def _forward_shift(
    shapes: list[LayerShape], single: list[float], n: float, b: float, chi: float = 1.0
) -> tuple[list[float], list[float]]:
    """ln E[preact_var] - ln q per layer: the finite-width bias of the mean (second order),
    and the measurement's own (the subtracted batch mean), apart.

    One input's per-unit variance ``q_hat`` is a Markov chain with ``E[q_hat' | q_hat] =
    s2 E[phi^2](q_hat)`` exactly, so ``E[preact_var] = E[q_hat]``. With ``y = ln q_hat`` and
    the log length map ``F(y) = ln(s2 E[phi^2](e^y))``, ``E[e^F(y)] ~ e^F(m) (1 + g mu +
    (g^2 + F'') V / 2)``; writing ``D = mu + V/2`` (the log of the mean), ``D' = g D +
    (F'' + g^2 - g) V_q / 2``, with ``V_q`` one input's variance of ``ln q_hat`` (``single``
    less the chi-square of its own units). Zero for relu (``g = 1``, ``F'' = 0``); negative
    for tanh (the map flattens: the mean falls), positive where it steepens (silu, gelu).
    The measured variance also subtracts the batch mean, whose square has expectation
    ``q (1/B + (1 - 1/B) c) / n`` (``c`` the layer input's uncentred correlation).
    """
    out, measure, d, c = [], [], 0.0, 0.0
    for i, sh in enumerate(shapes):
        out.append(d)
        measure.append(-(1.0 / b + (1.0 - 1.0 / b) * c) / n)
        v_q = max(single[i] - chi * 2.0 / n, 0.0)
        d = sh.g * d + (sh.g_curv + sh.g**2 - sh.g) * v_q / 2.0
        c = sh.c_next
    return out, measure


def _backward_shift(sh: LayerShape, d: float, v_q: float, v_batch: float) -> float:
    """E[ln] of one backward factor ``E[phi'^2](q_hat)`` against mean-field's, its own noise
    aside: each input's ``ln q_hat`` has mean ``D - V_q/2`` and variance ``V_q`` (one input),
    the batch mean of them varies by ``v_batch``. To second order, with ``g'`` and ``F_b''``
    the log-slope and bend of ``E[phi'^2]``: ``g' (D - V_q/2) + (F_b'' + g'^2) V_q/2 -
    g'^2 v_batch/2`` (Jensen over the batch's inputs, less the log of the batch mean's)."""
    v_q = max(v_q, 0.0)
    gs = sh.g_slope
    return gs * (d - v_q / 2.0) + (sh.slope_curv + gs**2) * v_q / 2.0 - gs**2 * v_batch / 2.0


def _backward_noise(
    shapes: list[LayerShape], n: float, b: float, chi: float = 1.0
) -> tuple[list[float], list[float]]:
    """Var of ln of each layer's backward factor beyond its scale, and its covariance with
    the same layer's forward ``eps_perp``.

    The factor's noise: phi'^2 over units and inputs, and W^T's chi-square, whose
    cross-input part grows as the gradients of different inputs keep their random
    O(1/sqrt(n)) correlations (slope E[phi'(u) phi'(v)] / E[phi'^2] per layer). Of the
    phi'^2 noise, the part ``g' eta`` that the layer's realised scale explains (its
    pre-activations' chi-square ``eta``, by Stein's lemma ``Cov = g' Var(eta)``) is already
    in the band through ``g' E_k``: only the rest is fresh, as in the forward's ``eps_perp``.
    """
    out, cross = [0.0] * len(shapes), [0.0] * len(shapes)
    spread = 1.0 / n  # independent projections at the top: correlation 0 +- 1/sqrt(n)
    for i in range(len(shapes) - 1, -1, -1):
        sh = shapes[i]
        # W^T acts on phi' * grad, whose inputs correlate by slope_corr times the gradients'
        spread *= sh.slope_corr**2
        chi_square = chi * (2.0 / n) * (1.0 / b + (1.0 - 1.0 / b) * spread)
        c_in = math.sqrt(1.0 / n) if i == 0 else shapes[i - 1].c_eff
        eta = chi * (2.0 / n) * (1.0 / b + (1.0 - 1.0 / b) * c_in**2)
        shape = (3.0 * (sh.kappa_slope - 1.0) / b + (1.0 - 1.0 / b) * max(sh.rho_slope, 0.0)) / n
        out[i] = chi_square + max(shape - sh.g_slope**2 * eta, 0.0)
        mixed = (sh.cross / b + (1.0 - 1.0 / b) * sh.cross_rho) / n
        cross[i] = mixed - sh.g * sh.g_slope * eta
        spread += 1.0 / n
    return out, cross


def _eps_perp(sh: LayerShape, n: float, b: float, eta: float) -> float:
    """The activation's noise beyond what the scale's own noise (slope g) explains."""
    eps = ((sh.kappa - 1.0) / b + (1.0 - 1.0 / b) * max(sh.rho, 0.0)) / n
    return max(eps - sh.g**2 * eta, 0.0)


def _layer(layer: int, q: float, var_f: float, grad_mf: float, rank_one: float,
           backward: tuple[float, float], bent: tuple[float, float],
           signal: str = "") -> BandLayer:  # fmt: skip
    ln10 = math.log(10.0)
    centre_f = (math.log(q) - var_f / 2.0) / ln10
    expected = grad_mf + rank_one
    var_b, shift_b = backward  # Var(ln grad_var), and E[ln grad_var] - ln(expected)
    centre_b = (math.log(expected) + shift_b) / ln10 if expected > 0 else -math.inf
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
    if signal:
        caveats.append(signal)
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
