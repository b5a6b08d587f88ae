"""Preliminaries: norms, sums along axes, keepdim and broadcasting.

The notes: the Frobenius norm is the length of the matrix pulled out into a vector; ``sum``
over a dim removes that dim (dim 0 is the outer ``for i in A`` loop), ``keepdim=True``
keeps it with size 1, and that is what makes broadcasting back against the input work.
Values are float64, compared with named tolerances because reduction order changes rounding.
"""

import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import float_tensors, positive_tensors, shapes

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


@given(_matrices())
def test_frobenius_norm(a: torch.Tensor) -> None:
    assert _frobenius_is_flat_norm(a, torch.linalg.matrix_norm(a, ord="fro"))
    assert _frobenius_is_flat_norm(a, torch.linalg.norm(a))  # the default for a matrix


def test_witness_frobenius_norm() -> None:
    # ord=2 on a matrix is the spectral norm (largest singular value), not the flat length:
    # for the identity it is 1, while the Frobenius norm is sqrt(3).
    a = torch.eye(3, dtype=torch.float64)
    assert not _frobenius_is_flat_norm(a, torch.linalg.matrix_norm(a, ord=2))


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


@given(_tensor_and_dim())
def test_sum_over_dim_shape(case: tuple[torch.Tensor, int]) -> None:
    a, dim = case
    assert _sum_shape_ok(a, dim, a.sum(dim), a.sum(dim, keepdim=True))


def test_witness_sum_over_dim_shape() -> None:
    # Summing the other axis (confusing "dim 0" with "the columns") fails on a 2x3 matrix,
    # and so does forgetting keepdim where a size-1 dim was promised.
    a = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    assert not _sum_shape_ok(a, 0, a.sum(1), a.sum(1, keepdim=True))
    assert not _sum_shape_ok(a, 0, a.sum(0), a.sum(0))


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


@given(_tensor_and_dims())
def test_multi_dim_sum_order(case: tuple[torch.Tensor, list[int]]) -> None:
    a, dims = case
    assert _orders_agree(a, dims, _sum_one_at_a_time(a, dims))
    assert _orders_agree(a, dims, _sum_one_at_a_time(a, list(reversed(dims))))


def test_witness_multi_dim_sum_order() -> None:
    # Chaining sums without keepdim shifts the indices: on a (2, 3, 4, 4) tensor
    # a.sum(0).sum(2) has the right shape (3, 4) but sums original dims 0 and 3, not 0 and 2.
    a = torch.arange(2 * 3 * 4 * 4, dtype=torch.float64).reshape(2, 3, 4, 4)
    assert not _orders_agree(a, [0, 2], a.sum(0).sum(2))


# --- broadcasting A / A.sum(d, keepdim=True) sums to 1 along d --------------------------


def _normalised_along(out: torch.Tensor, dim: int) -> bool:
    sums = out.sum(dim=dim)
    return _close(sums, torch.ones_like(sums))


@st.composite
def _positive_tensor_and_dim(draw: st.DrawFn) -> tuple[torch.Tensor, int]:
    a = draw(positive_tensors(shape=draw(shapes(max_dims=3, max_side=5))))
    return a, draw(st.integers(min_value=0, max_value=a.dim() - 1))


@given(_positive_tensor_and_dim())
def test_broadcast_normalise(case: tuple[torch.Tensor, int]) -> None:
    a, dim = case
    assert _normalised_along(a / a.sum(dim=dim, keepdim=True), dim)


def test_witness_broadcast_normalise() -> None:
    # Without keepdim a square matrix still broadcasts, silently along the wrong axis:
    # a.sum(1) has shape (3,) and lines up with the columns, so rows do not sum to 1.
    a = torch.arange(1, 10, dtype=torch.float64).reshape(3, 3)
    assert not _normalised_along(a / a.sum(dim=1), 1)
