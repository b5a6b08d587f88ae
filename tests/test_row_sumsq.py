"""A stack's per-row sum of squares: the per-cell probe's ``torch.dot`` where it is the
faster kernel (one thread, long rows), one ``vecdot`` kernel elsewhere.

On one thread and rows of at least ``DOT_ROWS_FROM`` elements, every row's sum of squares
is the per-cell probe's own ``torch.dot`` of that row, bit for bit. Elsewhere ``vecdot``
adds in another order: within the reduction bound ``n * eps * sum(x^2)``. The witness:
``vecdot`` on the long rows is not bit for bit the dots, so the first test can fail.
"""

import torch

from stability.core.stacked_stats import DOT_ROWS_FROM, row_sumsq
from stability.measure.threads import threads

EPS = 2.0**-24


def long_rows() -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    return torch.randn(8, DOT_ROWS_FROM * 2, generator=gen) * 3.0


def dots(flat: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.dot(r, r) for r in flat])


def test_one_thread_long_rows_are_the_per_cell_dots() -> None:
    flat = long_rows()
    with threads(1):
        assert torch.equal(row_sumsq(flat), dots(flat))


def test_elsewhere_within_the_reduction_bound() -> None:
    flat = long_rows()
    bound = flat.shape[1] * EPS * dots(flat)
    with threads(2):
        assert torch.all((row_sumsq(flat) - dots(flat)).abs() <= bound)
    short = flat[:, : DOT_ROWS_FROM // 4]
    with threads(1):
        got = row_sumsq(short)
    assert torch.all((got - dots(short)).abs() <= short.shape[1] * EPS * dots(short))


def test_the_witness_vecdot_is_not_the_dots_bit_for_bit() -> None:
    flat = long_rows()
    with threads(1):
        assert not torch.equal(torch.linalg.vecdot(flat, flat, dim=1), dots(flat))
