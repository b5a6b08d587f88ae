"""A stack's per-row sum of squares: the per-cell probe's ``torch.dot`` where it is the
faster kernel (one thread, long rows), one ``vecdot`` kernel elsewhere.

On one thread and rows of at least ``DOT_ROWS_FROM`` elements, every row's sum of squares
is the per-cell probe's own ``torch.dot`` of that row, bit for bit. Elsewhere ``vecdot``
adds in another order: within the reduction bound ``n * eps * sum(x^2)``. The witness:
``vecdot`` on the long rows is not bit for bit the dots, so the first test can fail.
Short rows on CPU are squared into a reused per-thread buffer and summed: ``vecdot``'s own
arithmetic, bit for bit (witness: the same squares summed in halves).
"""

from concurrent.futures import ThreadPoolExecutor

import pytest
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


def short_rows(shape: tuple[int, int], dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=dtype) * 3.0


SHORT = [((8, 4096), torch.float32), ((3, 1000), torch.float32), ((8, 1024), torch.float64)]


def check_small_rows_are_vecdot(sumsq: object) -> None:
    """Rows under ``SCRATCH_BELOW`` bytes (squared into a reused buffer): ``vecdot``'s bits."""
    assert callable(sumsq)
    for k, (shape, dtype) in enumerate(SHORT):
        flat = short_rows(shape, dtype, k)
        for n in (1, 2):
            with threads(n):
                assert torch.equal(sumsq(flat), torch.linalg.vecdot(flat, flat, dim=1))


def test_small_rows_are_vecdot_bit_for_bit() -> None:
    check_small_rows_are_vecdot(row_sumsq)


def test_witness_small_rows_summed_in_halves_are_not_vecdot() -> None:
    def halves(flat: torch.Tensor) -> torch.Tensor:
        return (flat * flat).view(flat.shape[0], 2, -1).sum(2).sum(1)

    with pytest.raises(AssertionError):
        check_small_rows_are_vecdot(halves)


def test_a_result_is_not_overwritten_by_the_next_call() -> None:
    a, b = short_rows((8, 4096), torch.float32, 1), short_rows((8, 4096), torch.float32, 2)
    first = row_sumsq(a)
    kept = first.clone()
    row_sumsq(b)
    assert torch.equal(first, kept)


def test_threads_do_not_share_a_buffer() -> None:
    """Each thread squares into its own buffer: four threads at once, every answer right."""
    inputs = [short_rows((8, 4096), torch.float32, k) for k in range(16)]
    want = [torch.linalg.vecdot(x, x, dim=1) for x in inputs]

    def many(x: torch.Tensor) -> torch.Tensor:
        for _ in range(50):
            got = row_sumsq(x)
        return got

    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(many, inputs))
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
