"""Numerical stability: products of random Gaussian matrices explode at the Lyapunov rate.

The notes (after d2l): multiply 100 random 4x4 N(0, 1) matrices and the entries reach 1e24;
in float16 they overflow long before. Here the growth rate of log ||product|| is held
against the top Lyapunov exponent (log 2 + psi(n/2)) / 2, over seeds, with standard errors
derived from the exact distribution of the per-step increments (log chi_n).
"""

import math
from collections.abc import Callable

import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds
from witness import assert_fails_on

CHAPTER = "Numerical stability: float16 range, overflow and underflow"

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


def check_growth_rate(rate: Callable[[int], float], products: torch.Tensor) -> None:
    """log ||P^T e_1|| grows at ``rate(n)`` per step, within SIGMAS standard errors."""
    errors = rate_errors_in_sigmas(products, rate(products.shape[-1]))
    assert max(errors) < SIGMAS, f"first half, second half, all: {errors} standard errors"


def naive_rate(n: int) -> float:
    """Known-bad: log(n) / 2, from E||M v||^2 = n; Jensen's gap puts the true rate below it."""
    return 0.5 * math.log(n)


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
    check_growth_rate(lyapunov_exponent, products)
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
    assert_fails_on(naive_rate, check_growth_rate, gaussian_products(n, seed))


def check_every_seed_overflows(dtype: torch.dtype) -> None:
    """d2l's product (4x4, 101 matrices) computed in ``dtype`` overflows for all 64 seeds."""
    final = gaussian_products(4, seed=0, dtype=dtype)[:, -1]
    overflowed = (~torch.isfinite(final)).any(dim=(-2, -1))
    assert bool(overflowed.all()), f"{int((~overflowed).sum())} seeds stay finite in {dtype}"


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
    check_every_seed_overflows(torch.float16)


def test_witness_d2l_gaussian_product() -> None:
    """The contrast: float32 holds 1e25 (max 3.4e38), so the same overflow check fails."""
    error = assert_fails_on(torch.float32, check_every_seed_overflows)
    assert f"{LYAPUNOV_SEEDS} seeds stay finite" in str(error)  # not one of them overflows
