"""SQNR in dB: measured against float64, and predicted for Gaussian data.

Measured: ``10 log10(sum x^2 / sum (x - q)^2)`` in float64.

Rounding theory (``rounding_sqnr_db``). A value in the binade [2^e, 2^(e+1)) of a grid with
``m`` mantissa bits is rounded with step ``2^(e-m)``; model the error as uniform on half a
step either side, variance ``step^2 / 12``. With ``x = 2^e (1 + f)`` the noise-to-signal
ratio of that value is ``4^-m / 12 * 4^-frac(log2|x|)``. Where the data sit within a binade
depends on the scale; averaged over the scale's position in a binade (``log2 sigma`` uniform
mod 1), ``E[4^-frac] = 3 / (4 ln 4)`` for *any* distribution, so
``N/S = 4^-m / (16 ln 4)`` and ``SQNR = 6.02 m + 10 log10(16 ln 4) = 6.02 m + 13.46 dB``
(E4M3 31.5, E5M2 25.5, E3M2 25.5, E2M1 19.5 dB). Ignored: values beyond the max (clipping),
the subnormal range (constant step) and flushing; for a fixed scale a ripple of a few tenths
of a dB around the average.

Gaussian model (``gaussian_sqnr_db``): the same data, N(0, sigma^2), put through the actual
element grid by quadrature (so clipping, saturation, subnormals and flushing all count),
where the recipe fixes the scale: ``tensor`` maps the expected amax of n samples to the
max, ``row`` that of a row, MX blocks take ``2^(floor(log2 amax) - emax)`` of a block's amax
and NVFP4 ``amax / 6``; the block amax is averaged over its distribution (quantiles of the
max of B |N(0,1)|), the block's other values drawn below it. Ignored: NVFP4's E4M3 rounding
of the block scale and its per-tensor scale; the correlation of values across blocks.
"""

import functools
import math

import torch

from stability.core.lowp.formats import Element, LowpFormat
from stability.core.lowp.recipes import Recipe
from stability.core.lowp.rounding import round_element

ROUNDING_OFFSET_DB = 10 * math.log10(16 * math.log(4))  # 13.46 dB
DB_PER_BIT = 20 * math.log10(2)  # 6.02 dB
_GRID = 20001  # quadrature points on [-_SPAN, _SPAN] standard deviations
_SPAN = 9.0
_QUANTILES = 32  # of the amax of a block, row or tensor


def sqnr_db(ref: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal over quantisation noise in dB, in float64 over finite ``ref`` values.

    inf when nothing was lost; -inf when the approximation is not finite where ref is."""
    r = ref.detach().double().reshape(-1)
    a = approx.detach().double().reshape(-1)
    keep = torch.isfinite(r)
    r, a = r[keep], a[keep]
    noise = float((r - a).square().sum())
    signal = float(r.square().sum())
    if not math.isfinite(noise):
        return -math.inf
    return db(signal, noise)


def db(signal: float, noise: float) -> float:
    """``10 log10(signal / noise)``, inf for no noise, nan for no signal."""
    if signal == 0:
        return math.nan
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def rounding_sqnr_db(mbits: int) -> float:
    """SQNR of rounding alone, averaged over the scale's position: 6.02 m + 13.46 dB."""
    return DB_PER_BIT * mbits + ROUNDING_OFFSET_DB


def combine_db(*sqnrs: float) -> float:
    """SQNR of a product of independently quantised operands: noise ratios add."""
    ratio = sum(10 ** (-s / 10) for s in sqnrs if math.isfinite(s))
    return math.inf if ratio == 0 else -10 * math.log10(ratio)


@functools.cache
def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.linspace(-_SPAN, _SPAN, _GRID, dtype=torch.float64)
    w = torch.exp(-0.5 * z * z) * (z[1] - z[0]) / math.sqrt(2 * math.pi)
    return z, w


def _amax_quantiles(n: int) -> torch.Tensor:
    """Quantiles of the max of ``n`` |N(0,1)|: Phi(t) = (1 + p^(1/n)) / 2 (a large n's max
    hardly varies, so it needs few)."""
    k = _QUANTILES if n <= 1024 else 8
    p = (torch.arange(k, dtype=torch.float64) + 0.5) / k
    t: torch.Tensor = torch.special.ndtri((1 + p ** (1 / n)) / 2)
    return t


@functools.cache
def _half_grid() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """|z| on the grid's non-negative half, and the running sums of weight and weight z^2
    outward from 0 (the negative half mirrors it), so truncating at t is a lookup."""
    z, w = _grid()
    mid = _GRID // 2
    wh = w[mid:].clone()
    wh[1:] *= 2  # both signs
    return z[mid:], torch.cumsum(wh, 0), torch.cumsum(wh * z[mid:] ** 2, 0)


@functools.cache
def _error_sums(elem: Element, unit: float) -> torch.Tensor:
    """Running sum outward from 0 of weight times the squared error of storing z / unit."""
    z, w = _grid()
    mid = _GRID // 2
    err = (z - round_element(z / unit, elem, saturate=True) * unit).square() * w
    half = err[mid:].clone()
    half[1:] += err[:mid].flip(0)
    return torch.cumsum(half, 0)


def _energies(elem: Element, unit: float, t: float, n: int) -> tuple[float, float]:
    """(signal, noise) per value of n values sigma=1, max exactly t, stored as z / unit."""
    zh, cw, cz2 = _half_grid()
    i = min(
        int(torch.searchsorted(zh, torch.tensor(t, dtype=zh.dtype), right=True)) - 1, zh.numel() - 1
    )
    i = max(i, 0)
    mass = float(cw[i])
    below_z2 = float(cz2[i]) / mass
    below_err = float(_error_sums(elem, unit)[i]) / mass
    top = float((t - float(round_element(torch.tensor(t / unit), elem, saturate=True)) * unit) ** 2)
    signal = ((n - 1) * below_z2 + t * t) / n
    noise = ((n - 1) * below_err + top) / n
    return signal, noise


@functools.cache
def _model_db(elem: Element, kind: str, n: int, log2_sigma: float) -> float:
    """The Gaussian model for one grid, scale rule, amax population and sigma (cached)."""
    signal = noise = 0.0
    for t in _amax_quantiles(max(n, 1)).tolist():
        if kind == "none":
            unit = 2.0**-log2_sigma  # sigma in element units is 2^log2_sigma
        elif kind == "max":  # tensor, row, NVFP4 block: amax to the element max
            unit = t / elem.max
        else:  # MX: 2^(floor(log2(sigma t)) - emax), in units of sigma
            k = max(min(math.floor(log2_sigma + math.log2(t)) - elem.emax, 127), -127)
            unit = 2.0 ** (k - log2_sigma)
        s, e = _energies(elem, unit, t, n)
        signal, noise = signal + s, noise + e
    return db(signal, noise)


def gaussian_sqnr_db(
    fmt: LowpFormat, recipe: Recipe, n: int, rms: float, row: int = 0, backward: bool = False
) -> float:
    """Predicted SQNR of N(0, rms^2) data in ``fmt``: ``n`` values, rows of ``row`` values
    (the ``row`` recipe's amax population), gradients in the backward grid.

    ``rms`` matters only where the scale is not data-driven (``none``) or is a power of two
    (MX, where only its place within a binade counts: E8M0's clamp at 2^-127 is ignored);
    it is rounded to 1/16 binade and ``n`` to a power of two, so the cache stays small."""
    elem = fmt.backward if backward else fmt.forward
    if not (rms > 0 and math.isfinite(rms)):
        return math.nan
    log2_sigma = round(math.log2(rms) * 16) / 16
    big = 2 ** round(math.log2(max(n, 1)))  # the max of n grows with log n: a power of two will do
    if fmt.scale == "e8m0":  # only sigma's place within a binade moves a power-of-two scale
        return _model_db(elem, "mx", fmt.block, log2_sigma % 1.0)
    if fmt.scale == "e4m3":
        return _model_db(elem, "max", fmt.block, 0.0)
    if recipe.kind == "none":
        return _model_db(elem, "none", big, log2_sigma)
    count = 2 ** round(math.log2(row)) if recipe.kind == "row" and row else big
    return _model_db(elem, "max", count, 0.0)
