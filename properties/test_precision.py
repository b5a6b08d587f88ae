"""Numerical stability: float16 range, overflow and underflow (exploding and vanishing products).

The notes: deep products explode (1.5^100) or vanish (0.8^100), which is "especially serious
for float16", whose range is about 6e-5 to 6e4. Here: the float16/bfloat16 limits; the powers,
computed by repeated multiplication in each dtype (the notes' 1.5^100 ~ 4e7 is wrong: it is
4.07e17); the growth rate of a product of Gaussian matrices (d2l's 100 products of 4x4
N(0, 1)) against its Lyapunov exponent; the project's float16 emulation against real casts
and native float16; and loss scaling, which recovers gradients that float16 flushes to zero.
"""

import copy
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import seeds

from stability.core.config import MLPConfig
from stability.core.dtypes import DTYPES, DType, get_dtype
from stability.core.emulation import precision_event_counts, round_to, round_with_grad
from stability.core.model import MLP, build_mlp, input_batch

CHAPTER = "Numerical stability: float16 range, overflow and underflow"

FP16 = get_dtype("float16")
BF16 = get_dtype("bfloat16")

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
# Round-to-nearest-even thresholds of float16 that follow from the facts: a value overflows
# at max + half an ulp (2^5 / 2 = 16; the tie goes up, to the even 2^16 = inf), flushes to 0
# at or below half the smallest subnormal (the tie goes to the even 0), and becomes
# subnormal below tiny minus half a subnormal ulp (that tie goes up, to the even tiny).
FP16_OVERFLOW_AT = 65520.0
FP16_FLUSH_AT_OR_BELOW = 2.0**-25
FP16_SUBNORMAL_BELOW = 2.0**-14 - 2.0**-25
BF16_OVERFLOW_AT = (2.0 - 2.0**-8) * 2.0**127
BF16_FLUSH_AT_OR_BELOW = 2.0**-134
BF16_SUBNORMAL_BELOW = 2.0**-126 - 2.0**-134
THRESHOLDS = {
    "float16": (FP16_OVERFLOW_AT, FP16_FLUSH_AT_OR_BELOW, FP16_SUBNORMAL_BELOW),
    "bfloat16": (BF16_OVERFLOW_AT, BF16_FLUSH_AT_OR_BELOW, BF16_SUBNORMAL_BELOW),
}

# float16 edge values (as float32): each side of every threshold, one float32 ulp apart.
_EDGES = [
    65504.0,
    FP16_OVERFLOW_AT,
    2.0**-24,
    2.0**-25,
    FP16_SUBNORMAL_BELOW,
    2.0**-14,
    1.0 + 2.0**-11,  # a tie between 1 and 1 + eps: goes to the even 1
    1.0 + 3 * 2.0**-11,  # a tie between 1 + eps and 1 + 2 eps: goes to 1 + 2 eps
]
FP16_EDGES = torch.tensor(sorted({v * s for v in _EDGES for s in (1.0, -1.0)}), dtype=torch.float32)
FP16_EDGES = torch.cat(
    [
        FP16_EDGES,
        torch.nextafter(FP16_EDGES, torch.full_like(FP16_EDGES, math.inf)),
        torch.nextafter(FP16_EDGES, torch.full_like(FP16_EDGES, -math.inf)),
        torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, 1e-45, 3e38]),
    ]
)

finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
any32 = st.floats(width=32)
values32 = st.lists(any32, min_size=1, max_size=64)


def _limit_mismatches(dt: DType, facts: dict[str, float]) -> list[str]:
    """The limits of ``dt`` that differ from ``facts`` (exact comparison), as readable strings."""
    got = {name: float(getattr(dt, name)) for name in facts}
    return [f"{k}: {got[k]!r} != {v!r}" for k, v in facts.items() if got[k] != v]


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
    assert _limit_mismatches(FP16, FP16_FACTS) == []
    assert _limit_mismatches(BF16, BF16_FACTS) == []
    assert math.isclose(BF16.max, 3.39e38, rel_tol=1e-3)
    assert math.isclose(FP16.tiny, 6.10e-5, rel_tol=1e-3)
    assert math.isclose(FP16.smallest_subnormal, 5.96e-8, rel_tol=1e-3)


def test_witness_dtype_limits() -> None:
    """bfloat16's limits are not float16's: the same fact check rejects every one of them."""
    assert len(_limit_mismatches(BF16, FP16_FACTS)) == len(FP16_FACTS)


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


@given(st.lists(finite32, min_size=1, max_size=32))
def test_float16_range(values: list[float]) -> None:
    """Rounding to float16 overflows, flushes and goes subnormal exactly at the thresholds."""
    x = torch.cat([torch.tensor(values, dtype=torch.float32), FP16_EDGES])
    assert _fp16_range_violations(lambda t: round_to(t, torch.float16), x) == 0


def test_witness_float16_range() -> None:
    """Rounding to bfloat16 instead of float16 fails the float16 range check."""
    assert _fp16_range_violations(lambda t: round_to(t, torch.bfloat16), FP16_EDGES) > 0


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


def test_notes_powers() -> None:
    """1.5^100 is 4.07e17 (not the notes' 4e7); 0.8^100 is 2.04e-10."""
    assert math.isclose(EXPLODING_BASE**POWER_STEPS, 4.066e17, rel_tol=1e-3)
    assert EXPLODING_BASE**POWER_STEPS / 4e7 > 1e10  # ten orders of magnitude off
    assert math.isclose(VANISHING_BASE**POWER_STEPS, 2.037e-10, rel_tol=1e-3)


def test_witness_notes_powers() -> None:
    """The notes' 4e7 is 1.5^43.2: the same closeness check rejects 4e7 for 1.5^100."""
    assert not math.isclose(4e7, 4.066e17, rel_tol=1e-3)
    assert math.isclose(math.log(4e7) / math.log(EXPLODING_BASE), 43.2, abs_tol=0.05)


# A product of 100 float32 roundings has relative error at most 100 * 2^-24 (half an ulp
# each, first order); 1e-5 is 1.7x that bound.
FLOAT32_PRODUCT_RTOL = 1e-5


def test_power_overflow() -> None:
    """1.5^100 by repeated multiplication overflows float16 (at step 28) but not float32.

    Step 28: 1.5^n first exceeds the overflow threshold 65520 at n = ceil(27.35) = 28; 28
    float16 roundings move the product by at most 28 * 2^-11 = 1.4 %, i.e. n by 0.03.
    """
    assert overflows(EXPLODING_BASE, POWER_STEPS, torch.float16)
    first = next(
        n for n in range(1, POWER_STEPS + 1) if overflows(EXPLODING_BASE, n, torch.float16)
    )
    assert first == math.ceil(math.log(FP16_OVERFLOW_AT) / math.log(EXPLODING_BASE)) == 28
    x32 = float(repeated_power(EXPLODING_BASE, POWER_STEPS, torch.float32))
    assert math.isclose(x32, EXPLODING_BASE**POWER_STEPS, rel_tol=FLOAT32_PRODUCT_RTOL)


def test_witness_power_overflow() -> None:
    """The contrast: the same overflow check is False in float32 and float64."""
    assert not overflows(EXPLODING_BASE, POWER_STEPS, torch.float32)
    assert not overflows(EXPLODING_BASE, POWER_STEPS, torch.float64)


# Bases whose 100th power is beyond float16 (> 65520 * 1.2, room for float16's rounding of
# the base: 100 * 2^-11 relative in the power) and well inside float32 (< 3.4e38 / 10).
@given(st.floats(min_value=1.13, max_value=2.3))
def test_power_overflow_any_base(base: float) -> None:
    """Every product that should leave float16's range does, and stays finite in float32."""
    assert base**POWER_STEPS > 1.2 * FP16_OVERFLOW_AT
    assert overflows(base, POWER_STEPS, torch.float16)
    assert not overflows(base, POWER_STEPS, torch.float32)


@given(st.floats(min_value=1.13, max_value=2.3))
def test_witness_power_overflow_any_base(base: float) -> None:
    """Rounded to bfloat16 (same exponent range as float32) the same products do not overflow."""
    assert not overflows(base, POWER_STEPS, torch.bfloat16)


def test_power_underflow() -> None:
    """0.8^100 = 2.04e-10 underflows float16 and not float32.

    Cast directly, float16 flushes it to 0 (it is below 2^-25). By repeated multiplication
    the product leaves the normal range at step 44 and then *stalls* at 2 * 2^-24 = 1.19e-7,
    585x the true value: in the subnormal grid k * 2^-24, round(0.8 * k) = k for k <= 2.
    Either way every significant digit is lost. float32 keeps it to 100 roundings.
    """
    true = VANISHING_BASE**POWER_STEPS
    assert round_to(torch.tensor(true, dtype=torch.float32), torch.float16).item() == 0.0
    x16 = float(repeated_power(VANISHING_BASE, POWER_STEPS, torch.float16))
    assert 0.0 < x16 < FP16.tiny
    assert x16 == 2 * FP16.smallest_subnormal
    assert x16 / true > 500
    x32 = float(repeated_power(VANISHING_BASE, POWER_STEPS, torch.float32))
    assert x32 >= get_dtype("float32").tiny
    assert math.isclose(x32, true, rel_tol=FLOAT32_PRODUCT_RTOL)


def test_witness_power_underflow() -> None:
    """The contrast: float32 and bfloat16 (float32's exponent range) keep 0.8^100 normal."""
    for dt in ("float32", "bfloat16"):
        dtype = get_dtype(dt)
        x = float(repeated_power(VANISHING_BASE, POWER_STEPS, dtype.dtype))
        assert x >= dtype.tiny, dt
    # And halving, whose ties go to the even 0, does reach exactly 0 in float16: the stall
    # above is a property of rounding 0.8 * k, not of the check.
    assert float(repeated_power(0.5, 30, torch.float16)) == 0.0


# -- products of random Gaussian matrices ---------------------------------------------------

PRODUCT_MATRICES = 101  # d2l: M = N(0,1) 4x4, then M = M @ N(0,1) 4x4, 100 times
LYAPUNOV_SEEDS = 64
SIGMAS = 5.0


def lyapunov_exponent(n: int) -> float:
    """Top Lyapunov exponent of products of n x n N(0, 1) matrices: (log 2 + psi(n/2)) / 2.

    For a unit vector v, ||M v|| ~ chi_n independently of v (rotation invariance), so
    log ||M_N ... M_1 v|| is a sum of N i.i.d. log chi_n, whose mean is this.
    """
    return 0.5 * (math.log(2.0) + float(torch.special.digamma(torch.tensor(n / 2.0))))


def log_chi_variance(n: int) -> float:
    """Var(log chi_n) = psi'(n/2) / 4: the per-step variance of the log-norm increments."""
    return 0.25 * float(torch.special.polygamma(1, torch.tensor(n / 2.0, dtype=torch.float64)))


def gaussian_products(n: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(LYAPUNOV_SEEDS, PRODUCT_MATRICES, n, n) running products M_k ... M_1, computed in
    ``dtype`` (the matrices are drawn in float64 and rounded once)."""
    gen = torch.Generator().manual_seed(seed)
    mats = torch.randn(LYAPUNOV_SEEDS, PRODUCT_MATRICES, n, n, generator=gen, dtype=torch.float64)
    mats = mats.to(dtype)
    running = [mats[:, 0]]
    for k in range(1, PRODUCT_MATRICES):
        running.append(running[-1] @ mats[:, k])  # d2l order: M = M @ new
    return torch.stack(running, dim=1)


def rate_errors_in_sigmas(products: torch.Tensor, rate: float) -> list[float]:
    """How far the measured growth rate of log ||P_k e|| is from ``rate``, in standard errors,
    over the first half, the second half and all steps (linear growth: all three agree).

    P = M_1 ... M_k (d2l multiplies on the right), so P^T e = M_k^T ... M_1^T e: a product of
    i.i.d. Gaussian matrices applied to e, whose log-norm increments are i.i.d. log chi_n.
    """
    n = products.shape[-1]
    log_norm = torch.linalg.vector_norm(products[..., 0, :], dim=-1).log()  # ||P^T e_1||
    sd = math.sqrt(log_chi_variance(n))
    total = products.shape[1]
    half = total // 2
    spans = [(0, half), (half, total), (0, total)]
    out = []
    for start, stop in spans:
        before = log_norm[:, start - 1] if start > 0 else torch.zeros(log_norm.shape[0])
        steps = stop - start
        measured = float((log_norm[:, stop - 1] - before).mean()) / steps
        stderr = sd / math.sqrt(steps * log_norm.shape[0])
        out.append(abs(measured - rate) / stderr)
    return out


@given(n=st.integers(min_value=2, max_value=8), seed=seeds())
def test_gaussian_product_growth(n: int, seed: int) -> None:
    """log ||product|| grows linearly at the Lyapunov rate (log 2 + psi(n/2)) / 2.

    The estimate over 64 seeds x 50 or 101 i.i.d. increments has standard error
    sqrt(psi'(n/2) / 4 / (steps * seeds)) exactly; the bound is 5 of them.
    The Frobenius norm adds an O(1) offset: for large N, P ~ s1 u v^T with v uniform on the
    sphere, so log(||P||_F / ||P^T e_1||) -> -log |u_1| with mean (psi(n/2) - psi(1/2)) / 2
    and variance (psi'(1/2) - psi'(n/2)) / 4.
    """
    products = gaussian_products(n, seed)
    assert max(rate_errors_in_sigmas(products, lyapunov_exponent(n))) < SIGMAS
    final = products[:, -1]
    offset = (
        torch.linalg.matrix_norm(final).log()
        - torch.linalg.vector_norm(final[:, 0, :], dim=-1).log()
    )
    half, one_half = (torch.tensor(v, dtype=torch.float64) for v in (n / 2.0, 0.5))
    mean = 0.5 * float(torch.special.digamma(half) - torch.special.digamma(one_half))
    var = 0.25 * float(torch.special.polygamma(1, one_half) - torch.special.polygamma(1, half))
    assert bool((offset >= 0).all())  # ||P||_F >= ||row 1||, always
    assert abs(float(offset.mean()) - mean) < SIGMAS * math.sqrt(var / LYAPUNOV_SEEDS)


@given(n=st.integers(min_value=2, max_value=8), seed=seeds())
def test_witness_gaussian_product_growth(n: int, seed: int) -> None:
    """The naive rate log(n) / 2 (from E||M v||^2 = n, Jensen's gap) fails the same check."""
    products = gaussian_products(n, seed)
    assert max(rate_errors_in_sigmas(products, 0.5 * math.log(n))) > SIGMAS


def test_d2l_gaussian_product() -> None:
    """d2l's 100 products of 4x4 N(0, 1): entries of order 1e24 in float64; float16 overflows.

    Mean over seeds of log||P||_F = 101 lambda + offset (see above) = 56.4 + 1.2 nats, i.e.
    10^25.0; the largest entry lies in [||P||_F / 4, ||P||_F] (16 entries), so its log10 mean is
    in [24.4, 25.0], +- 5 standard errors (sd of log||P||_F <= 4.0 + 1.0 nats, 64 seeds).
    """
    products = gaussian_products(4, seed=0)
    final = products[:, -1]
    assert bool(torch.isfinite(final).all())
    log10_max = final.abs().amax(dim=(-2, -1)).log10().mean().item()
    mu = (PRODUCT_MATRICES * lyapunov_exponent(4) + 1.193) / math.log(10)
    se = (math.sqrt(PRODUCT_MATRICES * log_chi_variance(4)) + 1.04) / math.log(10) / 8.0
    assert mu - math.log10(4) - SIGMAS * se < log10_max < mu + SIGMAS * se
    assert 23.0 < log10_max < 26.0
    fp16 = gaussian_products(4, seed=0, dtype=torch.float16)[:, -1]
    assert bool((~torch.isfinite(fp16)).any(dim=(-2, -1)).all())  # every seed overflowed


def test_witness_d2l_gaussian_product() -> None:
    """The contrast: float32 holds 1e25 (max 3.4e38), so the same overflow check is False."""
    fp32 = gaussian_products(4, seed=0, dtype=torch.float32)[:, -1]
    assert not bool((~torch.isfinite(fp32)).any(dim=(-2, -1)).all())
    assert bool(torch.isfinite(fp32).all())


# -- emulation against real casts ----------------------------------------------------------


def _reference_cast(x: torch.Tensor, name: str) -> torch.Tensor:
    """float32 -> ``name`` -> float32 by an implementation independent of torch's cast:
    numpy's float16, and round-to-nearest-even on the bits for bfloat16 (its top 16 bits)."""
    a = x.numpy()
    if name == "float16":
        with np.errstate(over="ignore"):
            return torch.from_numpy(a.astype(np.float16).astype(np.float32))
    bits = a.view(np.uint32).astype(np.uint64)
    bias = 0x7FFF + ((bits >> 16) & 1)
    rounded = ((bits + bias) & 0xFFFF0000).astype(np.uint32).view(np.float32).copy()
    rounded[np.isnan(a)] = np.nan
    return torch.from_numpy(rounded)


def bitwise_mismatches(got: torch.Tensor, want: torch.Tensor) -> int:
    """Positions where two float tensors differ (NaN equals any NaN; -0.0 differs from 0.0)."""
    both_nan = got.isnan() & want.isnan()
    same = ((got == want) & (got.signbit() == want.signbit())) | both_nan
    return int((~same).sum())


def cast_mismatches(
    emulate: Callable[[torch.Tensor, torch.dtype], torch.Tensor], name: str, x: torch.Tensor
) -> int:
    """Values where ``emulate(x, dtype)`` differs from the reference cast."""
    return bitwise_mismatches(emulate(x, get_dtype(name).dtype), _reference_cast(x, name))


# Every float16 value and every midpoint between neighbours (the ties), each +- 1 float32 ulp:
# the whole float16 grid at once, and everything near it.
_ALL16 = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.float16)
_ALL16 = _ALL16[torch.isfinite(_ALL16)].float().unique()
_MIDS = (_ALL16[1:] + _ALL16[:-1]) / 2
ALL_FLOAT16_NEIGHBOURHOOD = torch.cat(
    [
        grid
        for g in (_ALL16, _MIDS)
        for grid in (g, torch.nextafter(g, g + 1), torch.nextafter(g, g - 1))
    ]
    + [FP16_EDGES]
)


def test_round_with_grad_matches_cast_everywhere() -> None:
    """Exhaustively: emulated float16 equals a real float16 cast on its whole grid and ties."""
    x = ALL_FLOAT16_NEIGHBOURHOOD
    assert cast_mismatches(round_with_grad, "float16", x) == 0


def test_witness_round_with_grad_matches_cast_everywhere() -> None:
    """A flush-to-zero emulation (no subnormals) fails the same exhaustive check."""

    def ftz(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        r = round_to(x, dtype)
        return torch.where(r.abs() < torch.finfo(dtype).tiny, torch.zeros_like(r), r)

    assert cast_mismatches(ftz, "float16", ALL_FLOAT16_NEIGHBOURHOOD) > 1000


@given(values=values32, name=st.sampled_from(["float16", "bfloat16"]))
def test_round_with_grad_matches_cast(values: list[float], name: str) -> None:
    """For any float32 values (inf, NaN, subnormal included) emulation equals the cast, and the
    backward pass rounds the gradient the same way."""
    x = torch.tensor(values, dtype=torch.float32)
    assert cast_mismatches(round_with_grad, name, torch.cat([x, FP16_EDGES])) == 0
    leaf = torch.zeros_like(x, requires_grad=True)
    round_with_grad(leaf, get_dtype(name).dtype).backward(x)
    assert leaf.grad is not None
    assert bitwise_mismatches(leaf.grad, _reference_cast(x, name)) == 0


@given(values=values32, name=st.sampled_from(["float16", "bfloat16"]))
def test_witness_round_with_grad_matches_cast(values: list[float], name: str) -> None:
    """Truncation (round toward zero) instead of round-to-nearest fails the same check on
    values with bits below the format: here the edge values plus the drawn ones."""

    def truncate(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        r = x.to(dtype)
        step_back = torch.nextafter(r, torch.zeros_like(r))  # one ulp of ``dtype`` toward 0
        return torch.where(r.float().abs() > x.abs(), step_back, r).float()

    x = torch.cat([torch.tensor(values, dtype=torch.float32), FP16_EDGES])
    assert cast_mismatches(truncate, name, x) > 0


def expected_events(x: torch.Tensor, name: str) -> list[int]:
    """(overflow, subnormal, flush) counts from the thresholds alone, no cast involved."""
    overflow_at, flush_at, subnormal_below = THRESHOLDS[name]
    mag = x.abs()
    finite = torch.isfinite(x)
    overflow = finite & (mag >= overflow_at)
    flush = (mag > 0) & (mag <= flush_at)
    subnormal = (mag > flush_at) & (mag < subnormal_below)
    return [int(overflow.sum()), int(subnormal.sum()), int(flush.sum())]


@given(values=values32, name=st.sampled_from(["float16", "bfloat16"]))
def test_precision_event_counts(values: list[float], name: str) -> None:
    """Overflow, subnormal and flush counts equal those the thresholds predict, exactly; on a
    tensor already in the dtype (native), infs and subnormals are counted the same."""
    x = torch.cat([torch.tensor(values, dtype=torch.float32), FP16_EDGES])
    target = get_dtype(name)
    assert precision_event_counts(x, target).tolist() == expected_events(x, name)
    native = x[torch.isfinite(x)].to(target.dtype)
    want = expected_events(native.float(), name)
    counts = precision_event_counts(native, target).tolist()
    assert counts == [int(torch.isinf(native).sum()), want[1], 0]


def test_witness_precision_event_counts() -> None:
    """Classifying by the unrounded value (|x| < tiny = subnormal, < smallest = flush) miscounts
    the ties: values just below tiny round up to it, values above half a subnormal round up."""
    x = FP16_EDGES
    mag = x.abs()
    naive = [
        int((torch.isfinite(x) & (mag > FP16.max)).sum()),
        int(((mag >= FP16.smallest_subnormal) & (mag < FP16.tiny)).sum()),
        int(((mag > 0) & (mag < FP16.smallest_subnormal)).sum()),
    ]
    assert naive != expected_events(x, "float16")
    assert precision_event_counts(x, FP16).tolist() == expected_events(x, "float16")


# -- emulated against native float16 --------------------------------------------------------

# Both runs round each layer's pre-activation and output to float16; they differ only where
# float32 accumulation order flips a rounding. A flip is one float16 ulp (eps = 2^-10
# relative) at each of the two rounding points of a layer, hence rtol = 2 eps per layer. A
# pre-activation flip passes through the activation's slope into an output that can be much
# smaller than the pre-activation (gelu, selu below 0), so relative terms alone do not bound
# it: atol allows one ulp at the batch's largest output magnitude per layer. (Found by the
# 20-seed flake hunt: gelu at depth 1 differed by 2 ulps of a 0.21 output, 1.15e-3 relative.)
FP16_EPS = 2.0**-10
FP16_RTOL = 2 * FP16_EPS
FP16_ATOL = FP16_EPS


def native_copy(model: MLP, dtype: torch.dtype, device: str) -> MLP:
    """The same weights run natively in ``dtype`` on ``device``: no emulated rounding."""
    native = copy.deepcopy(model)
    for block in native.layers:
        block.round_dtype = None
    return native.to(device=device, dtype=dtype)


def emulation_disagreement(
    config: MLPConfig, rounding: torch.dtype, device: str, batch: int = 8
) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Outputs of the emulated model (rounding to ``rounding`` on CPU) and of the same weights
    in native float16 on ``device``, and the depth-scaled tolerances."""
    emulated = build_mlp(config)
    for block in emulated.layers:
        block.round_dtype = rounding
    x = input_batch(config, batch)
    native = native_copy(emulated, torch.float16, device)
    with torch.no_grad():
        want = native(x.to(device=device, dtype=torch.float16)).float().cpu()
        got = emulated(x)
    scale = float(want.abs().max()) if want.numel() else 0.0
    return got, want, FP16_RTOL * config.depth, FP16_ATOL * config.depth * scale


small_fp16_configs = st.builds(
    MLPConfig,
    depth=st.integers(min_value=1, max_value=4),
    width=st.integers(min_value=2, max_value=16),
    activation=st.sampled_from(["relu", "tanh", "gelu", "sigmoid", "selu", "identity"]),
    init=st.sampled_from(["kaiming_normal", "xavier_normal", "lecun_normal", "orthogonal"]),
    dtype=st.just("float16"),
    seed=st.integers(min_value=0, max_value=2**16),
)


@given(small_fp16_configs)
def test_emulated_float16_matches_native(config: MLPConfig) -> None:
    """Emulated float16 (float32 compute, rounded per layer) agrees with native float16 on CPU."""
    got, want, rtol, atol = emulation_disagreement(config, torch.float16, "cpu")
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


def _bf16_disagrees(device: str) -> bool:
    config = MLPConfig(depth=2, width=16, activation="tanh", init="xavier_normal", dtype="float16")
    got, want, rtol, atol = emulation_disagreement(config, torch.bfloat16, device)
    return not torch.allclose(got, want, rtol=rtol, atol=atol)


def test_witness_emulated_float16_matches_native() -> None:
    """Emulation that rounds to bfloat16 (8 significant bits, not 11) fails the same check."""
    assert _bf16_disagrees("cpu")


@pytest.mark.cuda
@given(small_fp16_configs)
@settings(max_examples=min(10, settings.default.max_examples))
def test_emulated_float16_matches_cuda(config: MLPConfig) -> None:
    """Emulated float16 on CPU agrees with native float16 on CUDA within the same tolerances."""
    got, want, rtol, atol = emulation_disagreement(config, torch.float16, "cuda")
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


@pytest.mark.cuda
def test_witness_emulated_float16_matches_cuda() -> None:
    """bfloat16 rounding on CPU fails agreement with native float16 on CUDA."""
    assert _bf16_disagrees("cuda")


# -- loss scaling ----------------------------------------------------------------------------

LOSS_SCALE = 2.0**16  # torch.amp.GradScaler's init_scale
# Gradients g in [2^-30, 2^-25): float16 flushes them (<= 2^-25) and S * g lies in
# [2^-14, 2^-9): normal float16, so one rounding costs at most half an ulp, 2^-11 relative.
TINY_GRADS = st.floats(min_value=2.0**-30, max_value=2.0**-25, exclude_max=True, width=32)
FP16_HALF_ULP = 2.0**-11


def test_loss_scale_is_gradscalers() -> None:
    """The scale used here is GradScaler's initial one."""
    assert torch.amp.GradScaler("cpu").get_scale() == LOSS_SCALE


def test_witness_loss_scale_is_gradscalers() -> None:
    """The check is not vacuous: 2^15 (a plausible misremembering) is not the init scale."""
    assert torch.amp.GradScaler("cpu").get_scale() != 2.0**15


def emulated_fp16_grad(g: float, scale: float) -> float:
    """d loss / d w for loss = scale * g * y, y = fp16-stored (w * 1), then unscaled in float32.

    The gradient reaching y is ``scale * g``; the emulation rounds it to float16 on its way
    back (as storing an activation gradient in float16 would).
    """
    w = torch.ones((), requires_grad=True)
    y = round_with_grad(w * 1.0, torch.float16)
    loss = torch.tensor(g, dtype=torch.float32) * y * scale
    loss.backward()  # type: ignore[no-untyped-call]
    assert w.grad is not None
    return float(w.grad / scale)


@given(TINY_GRADS)
def test_loss_scaling_recovers_gradient(g: float) -> None:
    """Scaling the loss by 2^16 recovers a gradient that float16 flushes to zero."""
    assert round_to(torch.tensor(g), torch.float16).item() == 0.0
    recovered = emulated_fp16_grad(g, LOSS_SCALE)
    assert recovered != 0.0
    assert abs(recovered - g) <= FP16_HALF_ULP * g


@given(TINY_GRADS)
def test_witness_loss_scaling_recovers_gradient(g: float) -> None:
    """Without loss scaling the same gradient is lost entirely."""
    assert emulated_fp16_grad(g, 1.0) == 0.0
