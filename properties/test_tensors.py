"""Preliminaries: norms, sums along axes, keepdim and broadcasting.

The notes: the Frobenius norm is the length of the matrix pulled out into a vector; ``sum``
over a dim removes that dim (dim 0 is the outer ``for i in A`` loop), ``keepdim=True``
keeps it with size 1, and that is what makes broadcasting back against the input work.
Values are float64, compared with named tolerances because reduction order changes rounding.
"""

from collections.abc import Callable

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import float_tensors, positive_tensors, shapes
from witness import assert_fails_on

CHAPTER = "Preliminaries"

RTOL = 1e-12  # float64 sums of <= 625 terms of size <= 1e3: rounding well below this
ATOL = 1e-12


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=RTOL, atol=ATOL)


# --- Frobenius norm = 2-norm of the flattened matrix ------------------------------------


def _frobenius_is_flat_norm(a: torch.Tensor, norm: torch.Tensor) -> bool:
    flat = torch.linalg.vector_norm(a.flatten(), ord=2)
    by_hand = a.flatten().pow(2).sum().sqrt()
    return _close(norm, flat) and _close(norm, by_hand)


@st.composite
def _matrices(draw: st.DrawFn) -> torch.Tensor:
    return draw(float_tensors(shape=draw(shapes(min_dims=2, max_dims=2, max_side=6))))


Norm = Callable[[torch.Tensor], torch.Tensor]


def frobenius(a: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_norm(a, ord="fro")


def spectral(a: torch.Tensor) -> torch.Tensor:
    """Known-bad: ord=2 on a matrix is the spectral norm (largest singular value)."""
    return torch.linalg.matrix_norm(a, ord=2)


NORMS = [
    pytest.param(frobenius, id="matrix_norm-fro"),
    pytest.param(torch.linalg.norm, id="norm-default"),  # the default for a matrix
]


@pytest.mark.parametrize("norm", NORMS)
@given(a=_matrices())
@example(a=torch.eye(3, dtype=torch.float64))  # rank 3: the spectral norm is 1, this sqrt(3)
def test_frobenius_norm(norm: Norm, a: torch.Tensor) -> None:
    assert _frobenius_is_flat_norm(a, norm(a))


def test_witness_frobenius_norm() -> None:
    # The spectral norm is not the flat length (it is, only for matrices of rank <= 1).
    assert_fails_on(spectral, test_frobenius_norm)


# --- sum over a dim drops it; keepdim keeps it with size 1 -----------------------------


def _sum_by_loop(a: torch.Tensor, dim: int) -> torch.Tensor:
    """The notes' picture: summing over ``dim`` adds the slices ``a[..., i, ...]`` together."""
    total = torch.zeros_like(a.select(dim, 0))
    for i in range(a.shape[dim]):
        total = total + a.select(dim, i)
    return total


def _sum_shape_ok(a: torch.Tensor, dim: int, dropped: torch.Tensor, kept: torch.Tensor) -> bool:
    expected = _sum_by_loop(a, dim)
    kept_shape = (*a.shape[:dim], 1, *a.shape[dim + 1 :])
    return _close(dropped, expected) and _close(kept, expected.reshape(kept_shape))


@st.composite
def _tensor_and_dim(draw: st.DrawFn) -> tuple[torch.Tensor, int]:
    a = draw(float_tensors(shape=draw(shapes(max_dims=4, max_side=4))))
    return a, draw(st.integers(min_value=0, max_value=a.dim() - 1))


Sum = Callable[[torch.Tensor, int, bool], torch.Tensor]  # (a, dim, keepdim) -> the sum


def torch_sum(a: torch.Tensor, dim: int, keepdim: bool) -> torch.Tensor:
    return a.sum(dim, keepdim=keepdim)


def sum_other_axis(a: torch.Tensor, dim: int, keepdim: bool) -> torch.Tensor:
    """Known-bad: sums the next axis (confusing "dim 0" with "the columns")."""
    return a.sum((dim + 1) % a.dim(), keepdim=keepdim)


def sum_forgetting_keepdim(a: torch.Tensor, dim: int, keepdim: bool) -> torch.Tensor:
    """Known-bad: drops the dim even where a size-1 dim was promised."""
    return a.sum(dim)


@pytest.mark.parametrize("summed", [pytest.param(torch_sum, id="sum")])
@given(case=_tensor_and_dim())
@example(case=(torch.arange(6, dtype=torch.float64).reshape(2, 3), 0))
def test_sum_over_dim_shape(summed: Sum, case: tuple[torch.Tensor, int]) -> None:
    a, dim = case
    assert _sum_shape_ok(a, dim, summed(a, dim, False), summed(a, dim, True))


@pytest.mark.parametrize("wrong", [sum_other_axis, sum_forgetting_keepdim])
def test_witness_sum_over_dim_shape(wrong: Sum) -> None:
    # Both fail on the 2x3 matrix pinned above (its other axis has 2 terms, not 3).
    assert_fails_on(wrong, test_sum_over_dim_shape)


# --- multi-dim sums in any order agree --------------------------------------------------


def _orders_agree(a: torch.Tensor, dims: list[int], sequential: torch.Tensor) -> bool:
    return _close(a.sum(dim=dims), sequential)


def _sum_one_at_a_time(a: torch.Tensor, dims: list[int]) -> torch.Tensor:
    # keepdim=True keeps the later dims' indices valid whatever the order.
    out = a
    for d in dims:
        out = out.sum(dim=d, keepdim=True)
    return out.reshape([s for i, s in enumerate(a.shape) if i not in dims])


@st.composite
def _tensor_and_dims(draw: st.DrawFn) -> tuple[torch.Tensor, list[int]]:
    a = draw(float_tensors(shape=draw(shapes(min_dims=2, max_dims=4, max_side=4))))
    dims = draw(st.permutations(range(a.dim())))
    count = draw(st.integers(min_value=2, max_value=a.dim()))
    return a, list(dims[:count])


Sequential = Callable[[torch.Tensor, list[int]], torch.Tensor]


def _sum_chained(a: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """Known-bad: chains the sums without keepdim, so each sum shifts the later indices."""
    out = a
    for d in dims:
        out = out.sum(dim=d)
    return out


def check_sum_order(sequential: Sequential, a: torch.Tensor, dims: list[int]) -> None:
    assert _orders_agree(a, dims, sequential(a, dims)), f"dims {dims}, shape {tuple(a.shape)}"


@given(_tensor_and_dims())
def test_multi_dim_sum_order(case: tuple[torch.Tensor, list[int]]) -> None:
    a, dims = case
    check_sum_order(_sum_one_at_a_time, a, dims)
    check_sum_order(_sum_one_at_a_time, a, list(reversed(dims)))


def test_witness_multi_dim_sum_order() -> None:
    # On a (2, 3, 4, 4) tensor a.sum(0).sum(2) has the right shape (3, 4) but sums original
    # dims 0 and 3, not 0 and 2. (On drawn dims it can also run out of range: a crash.)
    a = torch.arange(2 * 3 * 4 * 4, dtype=torch.float64).reshape(2, 3, 4, 4)
    assert_fails_on(_sum_chained, check_sum_order, a, [0, 2])


# --- broadcasting A / A.sum(d, keepdim=True) sums to 1 along d --------------------------


def _normalised_along(out: torch.Tensor, dim: int) -> bool:
    sums = out.sum(dim=dim)
    return _close(sums, torch.ones_like(sums))


@st.composite
def _positive_tensor_and_dim(draw: st.DrawFn) -> tuple[torch.Tensor, int]:
    a = draw(positive_tensors(shape=draw(shapes(max_dims=3, max_side=5))))
    return a, draw(st.integers(min_value=0, max_value=a.dim() - 1))


def normalise(a: torch.Tensor, dim: int) -> torch.Tensor:
    return a / a.sum(dim=dim, keepdim=True)


def normalise_without_keepdim(a: torch.Tensor, dim: int) -> torch.Tensor:
    """Known-bad: a square matrix still broadcasts, silently along the wrong axis: a.sum(1)
    has shape (3,) and lines up with the columns, so rows do not sum to 1."""
    return a / a.sum(dim=dim)


@pytest.mark.parametrize("normalised", [pytest.param(normalise, id="keepdim")])
@given(case=_positive_tensor_and_dim())
@example(case=(torch.arange(1, 10, dtype=torch.float64).reshape(3, 3), 1))
def test_broadcast_normalise(
    normalised: Callable[[torch.Tensor, int], torch.Tensor], case: tuple[torch.Tensor, int]
) -> None:
    a, dim = case
    assert _normalised_along(normalised(a, dim), dim)


def test_witness_broadcast_normalise() -> None:
    # Pinned above: the 3x3 matrix 1..9 normalised along its rows. (Drawn non-square
    # shapes would make it crash on broadcasting instead: not a verdict.)
    assert_fails_on(normalise_without_keepdim, test_broadcast_normalise)
