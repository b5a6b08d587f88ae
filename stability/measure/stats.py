"""The significance test the gate's throughput rules share: a one-sided Mann-Whitney U test.

Rank-based, so one slow outlier round on a shared machine moves it by one rank, not by its
size; no SciPy needed at run time (the tests compare it with SciPy's).
"""

import math
from collections.abc import Sequence
from statistics import median

ALPHA = 0.01  # a slowdown must be this significant to fail CI


def mann_whitney_greater(x: Sequence[float], y: Sequence[float]) -> float:
    """One-sided p-value that ``x`` tends to be larger than ``y`` (normal approximation with
    tie and continuity corrections; fine from about 8 samples a side)."""
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return math.nan
    pooled = sorted([(v, 0) for v in x] + [(v, 1) for v in y])
    ranks = [0.0] * len(pooled)
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    r1 = sum(r for r, (_, side) in zip(ranks, pooled, strict=True) if side == 0)
    u = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))


def min_samples(other: int, alpha: float = ALPHA) -> int:
    """The fewest samples on one side that could reach ``p < alpha`` against ``other`` on the
    other side, at complete separation (the best case the test can ever see)."""
    for n in range(1, 1000):
        low, high = [float(i) for i in range(n)], [float(1000 + i) for i in range(other)]
        if mann_whitney_greater(high, low) < alpha:
            return n
    raise ValueError(f"no sample count reaches p < {alpha} against {other} samples")


def meets_goal(
    measured: Sequence[float], base: Sequence[float], goal: float, alpha: float = ALPHA
) -> tuple[bool, float]:
    """Whether ``measured`` stays within ``goal`` times ``base`` (e.g. a probed step within
    1.10x the plain one): missed only when significantly over it, so noise near the goal
    does not flip the verdict. Returns (met, p-value of being over the goal)."""
    p = mann_whitney_greater(list(measured), [goal * t for t in base])
    ratio = median(measured) / median(base)
    return ratio <= goal or p >= alpha, p


def median_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval for the median of ``values`` (the order
    statistics ``x_(k)``, ``x_(n+1-k)`` with ``k`` from Binomial(n, 1/2)): no resampling, so
    the same rounds always give the same interval, and no assumption about their shape (a
    loaded machine's per-round ratios are skewed). ``(nan, nan)`` when ``n`` is too small
    for ``confidence`` (fewer than 6 values at 95 %)."""
    x = sorted(values)
    n = len(x)
    tail = (1 - confidence) / 2
    k, below = 0, 0.0  # the largest k with P(B <= k - 1) <= tail
    while k < n:
        nxt = below + math.comb(n, k) / 2**n
        if nxt > tail:
            break
        below, k = nxt, k + 1
    if k == 0:
        return math.nan, math.nan
    return x[k - 1], x[n - k]
