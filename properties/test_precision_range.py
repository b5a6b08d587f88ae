"""Numerical stability: float16 range, overflow and underflow (exploding and vanishing powers).

The notes: deep products explode (1.5^100) or vanish (0.8^100), which is "especially serious
for float16", whose range is about 6e-5 to 6e4. Here: the float16/bfloat16 limits against
the reference facts and the raw bits; the classes rounding to float16 puts values in
(overflow, flush to zero, subnormal) exactly at the thresholds; and the powers, computed by
repeated multiplication in each dtype (the notes' 1.5^100 ~ 4e7 is wrong: it is 4.07e17).
Products of Gaussian matrices are in ``test_gaussian_products.py``, the emulation of float16
in ``test_precision_emulation.py``, loss scaling in ``test_loss_scaling.py``.
"""

import math
from collections.abc import Callable

import torch
from formats import (
    BF16,
    FP16,
    FP16_EDGES,
    FP16_FLUSH_AT_OR_BELOW,
    FP16_OVERFLOW_AT,
    FP16_SUBNORMAL_BELOW,
)
from hypothesis import given
from hypothesis import strategies as st
from witness import assert_fails_on

from stability.core.dtypes import DTYPES, DType, get_dtype
from stability.core.emulation import round_to

CHAPTER = "Numerical stability: float16 range, overflow and underflow"

# Reference facts (DESIGN.md), written as exact binary values.
FP16_FACTS = {
    "max": 65504.0,  # (2 - 2^-10) * 2^15
    "tiny": 2.0**-14,
    "smallest_subnormal": 2.0**-24,
    "eps": 2.0**-10,
}
BF16_FACTS = {
    "max": (2.0 - 2.0**-7) * 2.0**127,  # 3.39e38
    "tiny": 2.0**-126,
    "smallest_subnormal": 2.0**-133,
    "eps": 2.0**-7,
}

finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


def _limit_mismatches(dt: DType, facts: dict[str, float]) -> list[str]:
    """The limits of ``dt`` that differ from ``facts`` (exact comparison), as readable strings."""
    got = {name: float(getattr(dt, name)) for name in facts}
    return [f"{k}: {got[k]!r} != {v!r}" for k, v in facts.items() if got[k] != v]


def check_limits(dt: DType, facts: dict[str, float]) -> None:
    mismatches = _limit_mismatches(dt, facts)
    assert mismatches == [], f"{dt.name}: {mismatches}"


def _smallest_positive(dtype: torch.dtype) -> float:
    """The value with bit pattern 1: the smallest positive subnormal, read from the bits."""
    return float(torch.tensor([1], dtype=torch.int16).view(dtype).item())


def test_dtype_limits() -> None:
    """float16/bfloat16 limits equal ``torch.finfo``, the raw bits and DESIGN.md's facts."""
    for dt in DTYPES.values():
        finfo = torch.finfo(dt.dtype)
        assert (dt.max, dt.tiny, dt.eps) == (finfo.max, finfo.tiny, finfo.eps), dt.name
        assert dt.tiny == finfo.smallest_normal
    for dt in (FP16, BF16):
        assert dt.smallest_subnormal == _smallest_positive(dt.dtype), dt.name
    check_limits(FP16, FP16_FACTS)
    check_limits(BF16, BF16_FACTS)
    assert math.isclose(BF16.max, 3.39e38, rel_tol=1e-3)
    assert math.isclose(FP16.tiny, 6.10e-5, rel_tol=1e-3)
    assert math.isclose(FP16.smallest_subnormal, 5.96e-8, rel_tol=1e-3)


def test_witness_dtype_limits() -> None:
    """bfloat16's limits are not float16's: the same fact check rejects every one of them."""
    error = assert_fails_on(BF16, check_limits, FP16_FACTS)
    assert all(f"{name}:" in str(error) for name in FP16_FACTS), error


def _fp16_range_violations(rounder: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> int:
    """How many values ``rounder`` (float32 -> float32 through some format) puts in the wrong
    float16 range class (overflow, flush to zero, subnormal, normal), judged by the thresholds."""
    r = rounder(x)
    mag = x.abs()
    finite = torch.isfinite(x)
    expect_inf = finite & (mag >= FP16_OVERFLOW_AT)
    expect_zero = mag <= FP16_FLUSH_AT_OR_BELOW
    expect_sub = (mag > FP16_FLUSH_AT_OR_BELOW) & (mag < FP16_SUBNORMAL_BELOW)
    rmag = r.abs()
    bad = (expect_inf != (torch.isinf(r) & finite)) | (expect_zero != (rmag == 0))
    bad |= expect_sub != ((rmag > 0) & (rmag < FP16.tiny))
    return int(bad.sum())


Rounder = Callable[[torch.Tensor], torch.Tensor]


def check_float16_range(rounder: Rounder, x: torch.Tensor) -> None:
    violations = _fp16_range_violations(rounder, x)
    assert violations == 0, f"{violations} values in the wrong float16 range class"


def to_float16(x: torch.Tensor) -> torch.Tensor:
    return round_to(x, torch.float16)


def to_bfloat16(x: torch.Tensor) -> torch.Tensor:
    """Known-bad as float16: bfloat16 has float32's exponent range and 8 significant bits."""
    return round_to(x, torch.bfloat16)


@given(st.lists(finite32, min_size=1, max_size=32))
def test_float16_range(values: list[float]) -> None:
    """Rounding to float16 overflows, flushes and goes subnormal exactly at the thresholds."""
    x = torch.cat([torch.tensor(values, dtype=torch.float32), FP16_EDGES])
    check_float16_range(to_float16, x)


def test_witness_float16_range() -> None:
    """Rounding to bfloat16 instead of float16 fails the float16 range check."""
    assert_fails_on(to_bfloat16, check_float16_range, FP16_EDGES)


# -- exploding and vanishing powers --------------------------------------------------------

POWER_STEPS = 100
EXPLODING_BASE = 1.5
VANISHING_BASE = 0.8


def repeated_power(base: float, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """``base`` multiplied into 1, ``steps`` times, every product stored in ``dtype``."""
    b = torch.tensor(base, dtype=dtype)
    x = torch.ones((), dtype=dtype)
    for _ in range(steps):
        x = x * b
    return x


def overflows(base: float, steps: int, dtype: torch.dtype) -> bool:
    """Whether the repeated product leaves ``dtype``'s range (becomes inf)."""
    return bool(torch.isinf(repeated_power(base, steps, dtype)))


def check_power(claimed: float, base: float, steps: int = POWER_STEPS) -> None:
    """``claimed`` is base^steps to 0.1 %, computed by repeated multiplication in float64
    (100 roundings of 2^-53: far below the tolerance)."""
    computed = float(repeated_power(base, steps, torch.float64))
    assert math.isclose(computed, claimed, rel_tol=1e-3), f"{base}^{steps} = {computed:.4g}"


def test_notes_powers() -> None:
    """1.5^100 is 4.07e17 (not the notes' 4e7); 0.8^100 is 2.04e-10."""
    check_power(4.066e17, EXPLODING_BASE)
    check_power(2.037e-10, VANISHING_BASE)


def test_witness_notes_powers() -> None:
    """The notes' 4e7 (which is 1.5^43.2, ten orders of magnitude short) fails the same check."""
    assert_fails_on(4e7, check_power, EXPLODING_BASE)


# A product of 100 float32 roundings has relative error at most 100 * 2^-24 (half an ulp
# each, first order); 1e-5 is 1.7x that bound.
FLOAT32_PRODUCT_RTOL = 1e-5


def check_overflows(dtype: torch.dtype, base: float = EXPLODING_BASE) -> None:
    assert overflows(base, POWER_STEPS, dtype), f"{base}^{POWER_STEPS} stays finite in {dtype}"


def check_underflows(dtype: torch.dtype, base: float = VANISHING_BASE) -> None:
    x = float(repeated_power(base, POWER_STEPS, dtype))
    tiny = torch.finfo(dtype).tiny
    assert x < tiny, f"{base}^{POWER_STEPS} = {x:.3g} stays normal in {dtype} (tiny {tiny:.3g})"


def test_power_overflow() -> None:
    """1.5^100 by repeated multiplication overflows float16 (at step 28) but not float32.

    Step 28: 1.5^n first exceeds the overflow threshold 65520 at n = ceil(27.35) = 28; 28
    float16 roundings move the product by at most 28 * 2^-11 = 1.4 %, i.e. n by 0.03.
    """
    check_overflows(torch.float16)
    first = next(
        n for n in range(1, POWER_STEPS + 1) if overflows(EXPLODING_BASE, n, torch.float16)
    )
    assert first == math.ceil(math.log(FP16_OVERFLOW_AT) / math.log(EXPLODING_BASE)) == 28
    x32 = float(repeated_power(EXPLODING_BASE, POWER_STEPS, torch.float32))
    assert math.isclose(x32, EXPLODING_BASE**POWER_STEPS, rel_tol=FLOAT32_PRODUCT_RTOL)


def test_witness_power_overflow() -> None:
    """The contrast: the same overflow check fails in float32 and float64."""
    assert_fails_on(torch.float32, check_overflows)
    assert_fails_on(torch.float64, check_overflows)


# Bases whose 100th power is beyond float16 (> 65520 * 1.2, room for float16's rounding of
# the base: 100 * 2^-11 relative in the power) and well inside float32 (< 3.4e38 / 10).
@given(st.floats(min_value=1.13, max_value=2.3))
def test_power_overflow_any_base(base: float) -> None:
    """Every product that should leave float16's range does, and stays finite in float32."""
    assert base**POWER_STEPS > 1.2 * FP16_OVERFLOW_AT
    check_overflows(torch.float16, base)
    assert not overflows(base, POWER_STEPS, torch.float32)


@given(st.floats(min_value=1.13, max_value=2.3))
def test_witness_power_overflow_any_base(base: float) -> None:
    """Rounded to bfloat16 (same exponent range as float32) the same products do not overflow."""
    assert_fails_on(torch.bfloat16, check_overflows, base)


def test_power_underflow() -> None:
    """0.8^100 = 2.04e-10 underflows float16 and not float32.

    Cast directly, float16 flushes it to 0 (it is below 2^-25). By repeated multiplication
    the product leaves the normal range at step 44 and then *stalls* at 2 * 2^-24 = 1.19e-7,
    585x the true value: in the subnormal grid k * 2^-24, round(0.8 * k) = k for k <= 2.
    Either way every significant digit is lost. float32 keeps it to 100 roundings. (Halving,
    whose ties go to the even 0, does reach exactly 0: the stall comes from rounding 0.8 k.)
    """
    true = VANISHING_BASE**POWER_STEPS
    assert round_to(torch.tensor(true, dtype=torch.float32), torch.float16).item() == 0.0
    check_underflows(torch.float16)
    x16 = float(repeated_power(VANISHING_BASE, POWER_STEPS, torch.float16))
    assert x16 == 2 * FP16.smallest_subnormal
    assert float(repeated_power(0.5, 30, torch.float16)) == 0.0
    assert x16 / true > 500
    x32 = float(repeated_power(VANISHING_BASE, POWER_STEPS, torch.float32))
    assert x32 >= get_dtype("float32").tiny
    assert math.isclose(x32, true, rel_tol=FLOAT32_PRODUCT_RTOL)


def test_witness_power_underflow() -> None:
    """The contrast: float32 and bfloat16 (float32's exponent range) keep 0.8^100 normal."""
    assert_fails_on(torch.float32, check_underflows)
    assert_fails_on(torch.bfloat16, check_underflows)
