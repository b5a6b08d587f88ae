"""SQNR of the low-precision formats: measured against float64, held to the theory.

Claims: (1) rounding alone costs ``6.02 m + 13.46`` dB for ``m`` mantissa bits, averaged over
the data's place within a binade (``core.lowp.sqnr``'s derivation); measured on Gaussian
data at 16 scales evenly spread over a binade it agrees within five standard
errors of the estimate (delta method) plus a bound on the uniform-error model's bias.
(2) The Gaussian model, which puts the data
through the real grid under the recipe, agrees with the measurement for every format
(clipping and underflow included) within five standard errors plus the model's own
approximations (``MODEL_DB``). Witnesses: the theory for the wrong mantissa width, and the
rounding-only theory applied where MXFP4's underflow counts.
"""

import math
from collections.abc import Callable

import pytest
import torch
from witness import assert_fails_on

from stability.core.lowp.formats import ELEMENTS, get_format
from stability.core.lowp.quantize import quantize
from stability.core.lowp.recipes import get_recipe
from stability.core.lowp.rounding import round_element
from stability.core.lowp.sqnr import gaussian_sqnr_db, rounding_sqnr_db, sqnr_db

N = 2**15  # values per scale
POSITIONS = 16  # scales per binade
SIGMAS = 5.0
# The Gaussian model replaces a block's amax by 64 quantiles and sigma by the nearest 1/16
# binade, and ignores NVFP4's E4M3 rounding of its block scale: measured 0.1-0.16 dB.
MODEL_DB = 0.25
# The rounding theory's tolerance: five standard errors plus ``uniform_model_db``.
# Data sigma for the rounding theory: far enough below the max that nothing clips, far
# enough above the smallest normal that the subnormal step's noise is < 1 % of the total.
BASE = {"e4m3": 1.0, "e5m2": 1.0, "e3m2": 4.0}


def uniform_model_db(m: int) -> float:
    """Bound on the uniform-error model's own bias: over a cell of width D the density's
    curvature adds ``(p''/p) D^2 / 30`` to the relative noise; for N(0,1) weighted where the
    noise is (``E[x^6 - x^4] = 12``) with ``D <= |x| 2^-m`` that is at most ``0.4 * 4^-m``."""
    return 10 * math.log10(1 + 0.4 * 4.0**-m)


def _ratio_and_se(x: torch.Tensor, q: torch.Tensor) -> tuple[float, float]:
    """Noise over signal and its standard error (delta method on the two sums)."""
    e2 = (x - q).square()
    x2 = x.square()
    r = float(e2.mean() / x2.mean())
    influence = e2 / e2.mean() - x2 / x2.mean()
    return r, r * float(influence.std()) / math.sqrt(x.numel())


def measured_rounding(name: str) -> tuple[float, float]:
    """(SQNR dB averaged over a binade of scales, its standard error in dB)."""
    elem = ELEMENTS[name]
    g = torch.Generator().manual_seed(11)
    ratios, ses = [], []
    for j in range(POSITIONS):
        x = torch.randn(N, generator=g, dtype=torch.float64) * BASE[name] * 2 ** (j / POSITIONS)
        r, se = _ratio_and_se(x, round_element(x.float(), elem).double())
        ratios.append(r)
        ses.append(se)
    mean = sum(ratios) / POSITIONS
    se = math.sqrt(sum(s * s for s in ses)) / POSITIONS
    return -10 * math.log10(mean), 10 / math.log(10) * se / mean


@pytest.mark.parametrize("name", list(BASE))
def test_rounding_sqnr_matches_theory(
    name: str, theory: Callable[[int], float] = rounding_sqnr_db
) -> None:
    got, se = measured_rounding(name)
    m = ELEMENTS[name].mbits
    want = theory(m)
    assert abs(got - want) <= SIGMAS * se + uniform_model_db(m), (
        f"{name}: measured {got:.3f} dB, theory {want:.3f} (se {se:.3f})"
    )


def test_witness_rounding_sqnr_matches_theory() -> None:
    def wrong_width(m: int) -> float:
        return rounding_sqnr_db(m + 1)

    assert_fails_on(wrong_width, lambda t: test_rounding_sqnr_matches_theory("e4m3", t))


CASES = [("e4m3", "tensor"), ("e4m3", "row"), ("e4m3", "none"), ("e5m2", "tensor"),
         ("hybrid", "tensor"), ("mxfp8", "tensor"), ("mxfp8_e5m2", "tensor"),
         ("mxfp6", "tensor"), ("mxfp4", "tensor"), ("nvfp4", "tensor")]  # fmt: skip


def _model(fmt_name: str, recipe: str, n: int, rms: float, row: int) -> float:
    return gaussian_sqnr_db(get_format(fmt_name), get_recipe(recipe), n, rms, row)


def _rounding_only(fmt_name: str, recipe: str, n: int, rms: float, row: int) -> float:
    """Known-bad where clipping and underflow count: the rounding theory alone."""
    return rounding_sqnr_db(get_format(fmt_name).forward.mbits)


@pytest.mark.parametrize("fmt_name, recipe", CASES, ids=[f"{f}-{r}" for f, r in CASES])
@pytest.mark.parametrize("rms", [1.0, 0.013])
def test_gaussian_model_matches_measured(fmt_name: str, recipe: str, rms: float,
                                         model: Callable[..., float] = _model) -> None:  # fmt: skip
    g = torch.Generator().manual_seed(12)
    x = torch.randn(64, 1024, generator=g) * rms
    q = quantize(x, get_format(fmt_name), get_recipe(recipe)).values
    r, se = _ratio_and_se(x.double(), q.double())
    got = -10 * math.log10(r)
    assert got == pytest.approx(sqnr_db(x, q), abs=1e-9)
    want = model(fmt_name, recipe, x.numel(), rms, x.shape[-1])
    tol = SIGMAS * 10 / math.log(10) * se / r + MODEL_DB
    assert abs(got - want) <= tol, f"{fmt_name}/{recipe}: measured {got:.2f} dB, model {want:.2f}"


def test_witness_gaussian_model_matches_measured() -> None:
    assert_fails_on(
        _rounding_only, lambda m: test_gaussian_model_matches_measured("mxfp4", "tensor", 1.0, m)
    )
