"""The vectorised sweep: a stack of cells gives each cell the rows the per-cell path gives it.

Over random small grids (any activation, init, seeds, emulated or full dtype), every cell's
rows from ``run_stack`` equal ``run_cell``'s. Both paths compute the same network values
bit for bit (``torch.bmm`` slices equal ``addmm`` on CPU, and ``batch * width`` is a
multiple of 64 here so elementwise kernels split their vector tails the same way); only
the statistics' reductions differ in the order they add.

Tolerance derivation: a reduction of ``n`` terms in precision ``eps`` (float32 ``2**-24``,
float64 ``2**-53``) is off by at most ``n * eps`` times the sum of the terms' magnitudes.
For a variance that sum is the second moment ``E[x^2]``; for a mean, at most its square
root. The largest reduction here is a weight gradient, ``n = width**2 <= 1024``, and the
one-pass variance may lose another factor 2, so: ``|a - b| <= 2 * n * eps * scale`` with
``scale = E[x^2]`` (variances) or ``sqrt(E[x^2])`` (means); counts, fractions, max_abs and
every theory column are equal exactly. Columns go NaN together (data-driven inits'
theory) or not at all.

The witness: a stack that draws every cell with the first cell's seed (one generator
shared across the stack) gives the second seed the first seed's rows, far outside this.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from witness import assert_fails_on

from stability.core import exact_scale
from stability.core.activations import ACTIVATIONS
from stability.core.config import MLPConfig
from stability.core.exact_scale import weight_gradient
from stability.core.inits import INITS
from stability.core.stacked import probe_stack, stackable
from stability.core.weight_cache import WeightCache, WeightKey
from stability.sweep import vectorised
from stability.sweep.cells import Cell, SweepGrid, cell_rows, run_cell
from stability.sweep.stacks import group_by_shape
from stability.sweep.vectorised import run_stack

Rows = list[dict[str, Any]]
StackImpl = Callable[[Sequence[Cell]], list[Rows]]
EPS = {"float64": 2.0**-53}  # everything else computes in float32
F32_EPS = 2.0**-24
EXACT = {"layer", "nonfinite", "act_max_abs", "cell_key", "batch", "precision_mode"}
MEANS = {"act_mean": "act_var", "preact_mean": "preact_var"}


def stacked(cells: Sequence[Cell]) -> list[Rows]:
    """The real vectorised path: each shape's cells as one stack. A stack that raised would
    fall back to the per-cell path and pass for the wrong reason: that fails here."""
    out: dict[str, Rows] = {}
    fell_back: list[int] = []
    per_cell = vectorised._per_cell

    def recorded(group: Sequence[Cell]) -> list[tuple[Cell, Any]]:
        fell_back.append(len(group))
        return per_cell(group)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vectorised, "_per_cell", recorded)
        for group in group_by_shape(cells):
            fell_back.clear()
            for cell, outcome in run_stack(group):
                assert not isinstance(outcome, BaseException), outcome
                out[cell.key] = outcome[0]
            if len(group) > 1 and stackable(group[0].config):
                assert not fell_back, f"the stack of {len(group)} fell back to per-cell"
    return [out[c.key] for c in cells]


def cached(cells: Sequence[Cell]) -> list[Rows]:
    """The vectorised path with one weight cache across the stacks, as a sweep runs them:
    a grid of two activations copies the second stack's weights from the first's."""
    out: dict[str, Rows] = {}
    cache = WeightCache(2**30)
    for group in group_by_shape(cells):
        for cell, stats in zip(
            group, probe_stack([c.config for c in group], group[0].batch, cache), strict=True
        ):
            out[cell.key] = cell_rows(cell, stats)
    return [out[c.key] for c in cells]


class SeedlessCache(WeightCache):
    """Known bad: a cache whose key forgets the seed, so seeds share their weights."""

    def get(self, key: WeightKey | None) -> torch.Tensor | None:
        return super().get(None if key is None else (*key[:1], 0, *key[2:]))

    def put(self, weights: torch.Tensor, keys: list[WeightKey | None]) -> None:
        super().put(weights, [None if k is None else (*k[:1], 0, *k[2:]) for k in keys])


def seedless_cache(cells: Sequence[Cell]) -> list[Rows]:
    out: dict[str, Rows] = {}
    cache = SeedlessCache(2**30)
    for group in group_by_shape(cells):
        for c in group:  # one cell per stack: every later seed hits the first seed's weights
            (stats,) = probe_stack([c.config], c.batch, cache)
            out[c.key] = cell_rows(c, stats)
    return [out[c.key] for c in cells]


def shared_seed_stack(cells: Sequence[Cell]) -> list[Rows]:
    """Known bad: every cell of a stack drawn from the first cell's seed."""
    out: dict[str, Rows] = {}
    for group in group_by_shape(cells):
        configs = [replace(c.config, seed=group[0].config.seed) for c in group]
        for cell, stats in zip(group, probe_stack(configs, group[0].batch), strict=True):
            out[cell.key] = cell_rows(cell, stats)
    return [out[c.key] for c in cells]


def assert_rows_close(got: Rows, want: Rows, width: int, dtype: str) -> None:
    tol = 2 * width * width * EPS.get(dtype, F32_EPS)
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.keys() == b.keys()
        for k, va in a.items():
            vb = b[k]
            if not isinstance(va, float) or k in EXACT or k.startswith("theory_"):
                assert va == vb or (va != va and vb != vb), (k, a["layer"], va, vb)
                continue
            if math.isnan(va) or math.isnan(vb):
                assert math.isnan(va) and math.isnan(vb), (k, a["layer"], va, vb)
                continue
            if k.endswith("_frac"):
                assert va == vb, (k, a["layer"], va, vb)
                continue
            var_key = MEANS.get(k)
            # A variance's scale is its own size; a mean's, the root of the second moment.
            scale = abs(vb) if var_key is None else math.sqrt(abs(b[var_key]) + vb * vb)
            assert abs(va - vb) <= tol * scale or va == vb, (k, a["layer"], va, vb, tol)


def check_rows_per_cell(impl: StackImpl, grid: SweepGrid) -> None:
    cells = grid.cells()
    for cell, got in zip(cells, impl(cells), strict=True):
        assert_rows_close(got, run_cell(cell), cell.config.width, cell.config.dtype)


grids = st.builds(
    SweepGrid,
    activations=st.lists(st.sampled_from(sorted(ACTIVATIONS)), min_size=1, max_size=2, unique=True),
    inits=st.lists(st.sampled_from(sorted(INITS)), min_size=1, max_size=2, unique=True),
    depths=st.lists(st.integers(1, 3), min_size=1, max_size=1),
    widths=st.lists(st.sampled_from([16, 32]), min_size=1, max_size=1),
    dtypes=st.lists(
        st.sampled_from(["float32", "float16", "bfloat16", "float64"]),
        min_size=1,
        max_size=2,
        unique=True,
    ),
    seeds=st.lists(st.integers(0, 2**31), min_size=1, max_size=2, unique=True),
    batches=st.lists(st.sampled_from([4, 8]), min_size=1, max_size=1),
)
TWO_SEEDS = SweepGrid(("tanh",), ("xavier_normal",), (3,), (16,), ("float32",), (0, 1), (4,))


@pytest.mark.parametrize("impl", [stacked], ids=["run_stack"])
@given(grid=grids)
@example(grid=TWO_SEEDS)
def test_stacked_rows_equal_per_cell_rows(impl: StackImpl, grid: SweepGrid) -> None:
    check_rows_per_cell(impl, grid)


def test_witness_stacked_rows_equal_per_cell_rows() -> None:
    assert_fails_on(shared_seed_stack, test_stacked_rows_equal_per_cell_rows)


TWO_ACTIVATIONS = replace(TWO_SEEDS, activations=("tanh", "relu"))


@pytest.mark.parametrize("impl", [cached], ids=["cached"])
@given(grid=grids)
@example(grid=TWO_ACTIVATIONS)
def test_cached_rows_equal_per_cell_rows(impl: StackImpl, grid: SweepGrid) -> None:
    """A sweep's stacks lend each other their drawn weights: the rows are still per cell."""
    check_rows_per_cell(impl, grid)


def test_witness_cached_rows_equal_per_cell_rows() -> None:
    assert_fails_on(seedless_cache, test_cached_rows_equal_per_cell_rows)


def check_float16_damage(impl: StackImpl) -> None:
    """A vanishing float16 net (tanh, N(0, 0.01^2)) goes subnormal: the stacked counts are
    the per-cell counts exactly, and they are not all zero."""
    grid = SweepGrid(("tanh",), ("normal",), (6,), (16,), ("float16",), (0, 1), (8,))
    cells = grid.cells()
    rows = impl(cells)
    for cell, got in zip(cells, rows, strict=True):
        assert_rows_close(got, run_cell(cell), 16, "float16")
    assert max(r["subnormal_frac"] + r["flush_frac"] for rs in rows for r in rs) > 0.05


def test_emulated_float16_stack_counts_the_same_damage() -> None:
    check_float16_damage(stacked)


def test_witness_emulated_float16_stack_counts_the_same_damage() -> None:
    assert_fails_on(shared_seed_stack, check_float16_damage)


def check_data_driven_and_orthogonal(impl: StackImpl) -> None:
    """LSUV (data-driven) and orthogonal cells stack with each other, each with its seed."""
    pairs = (("lsuv", 5), ("orthogonal", 6))
    cells = [Cell(MLPConfig(depth=3, width=16, init=i, seed=s), 4) for i, s in pairs]
    for cell, got in zip(cells, impl(cells), strict=True):
        assert_rows_close(got, run_cell(cell), 16, "float32")


def test_lsuv_and_orthogonal_cells_stack_with_the_others() -> None:
    check_data_driven_and_orthogonal(stacked)


def test_witness_lsuv_and_orthogonal_cells_stack_with_the_others() -> None:
    assert_fails_on(shared_seed_stack, check_data_driven_and_orthogonal)


SATURATED = SweepGrid(("selu",), ("kaiming_normal",), (40,), (32,), ("float32",), (0, 1), (32,))


def unscaled_weight_gradient(
    x: torch.Tensor, g: torch.Tensor, bound: Callable[[], float]
) -> torch.Tensor:
    """Known bad: the exact rescale of the weight gradient applied and never undone."""
    return torch.bmm(x.transpose(1, 2), g * 2.0**40)


def check_saturated_stack(gemm: Callable[..., torch.Tensor]) -> None:
    """An exploding selu net (kaiming) whose pre-activation gradients go subnormal: the
    stack, which rescales its weight-gradient GEMM by a power of two (core/exact_scale.py),
    still gives the per-cell rows."""
    seen: list[int] = []

    def spy(x: torch.Tensor, g: torch.Tensor, bound: Callable[[], float]) -> torch.Tensor:
        seen.append(int(((g != 0) & (g.abs() < torch.finfo(g.dtype).tiny)).sum()))
        return gemm(x, g, bound)

    rescaled: list[int] = []
    rescaled_bmm = exact_scale.rescaled_bmm

    def counted(x_t: torch.Tensor, g: torch.Tensor, bound: float) -> torch.Tensor:
        rescaled.append(1)
        return rescaled_bmm(x_t, g, bound)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("stability.core.stacked.weight_gradient", spy)
        patch.setattr(exact_scale, "RESCALE_FROM", 0)  # a width-32 stack
        patch.setattr(exact_scale, "rescaled_bmm", counted)
        check_rows_per_cell(stacked, SATURATED)
    assert sum(seen) > 100  # the case exists: the gradients do hold subnormals
    assert gemm is not weight_gradient or rescaled  # and the rescale ran on them


def test_a_stack_with_subnormal_gradients_gives_the_per_cell_rows() -> None:
    check_saturated_stack(weight_gradient)


def test_witness_a_stack_with_subnormal_gradients_gives_the_per_cell_rows() -> None:
    assert_fails_on(unscaled_weight_gradient, check_saturated_stack)


def unguarded_stacked(cells: Sequence[Cell]) -> list[Rows]:
    """Known bad: the stacked helper without its guard, as it was."""
    out: dict[str, Rows] = {}
    for group in group_by_shape(cells):
        for cell, outcome in run_stack(group):
            assert not isinstance(outcome, BaseException), outcome
            out[cell.key] = outcome[0]
    return [out[c.key] for c in cells]


def check_refuses_fallback(helper: StackImpl) -> None:
    """run_stack answers a failing stack with per-cell rows, which equal themselves: the
    helper must refuse them, or every property above could pass on a crash."""

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a stacked probe that crashes")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vectorised, "probe_stack", broken)
        with pytest.raises(AssertionError, match="fell back"):
            check_rows_per_cell(helper, TWO_SEEDS)


def test_the_stacked_helper_refuses_a_stack_that_fell_back_to_per_cell() -> None:
    check_refuses_fallback(stacked)


def test_witness_the_stacked_helper_refuses_a_stack_that_fell_back_to_per_cell() -> None:
    assert_fails_on(unguarded_stacked, check_refuses_fallback)
