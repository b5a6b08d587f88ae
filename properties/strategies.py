"""Hypothesis strategies shared by the property files (suite-internal; users get stability.testing).

Small tensors are drawn element by element so hypothesis can shrink them and reach edge
values; large statistical samples are drawn by torch from a hypothesis-chosen seed instead,
which keeps examples fast and every run reproducible from the printed seed.
"""

import math

import torch
from hypothesis import strategies as st

MAX_SEED = 2**32 - 1


def seeds() -> st.SearchStrategy[int]:
    """A torch seed; statistical properties draw their samples from it, one seed per example."""
    return st.integers(min_value=0, max_value=MAX_SEED)


@st.composite
def shapes(
    draw: st.DrawFn, min_dims: int = 1, max_dims: int = 4, min_side: int = 1, max_side: int = 5
) -> tuple[int, ...]:
    """A tensor shape with ``min_dims..max_dims`` dimensions of ``min_side..max_side`` each."""
    ndim = draw(st.integers(min_value=min_dims, max_value=max_dims))
    side = st.integers(min_value=min_side, max_value=max_side)
    return tuple(draw(st.lists(side, min_size=ndim, max_size=ndim)))


@st.composite
def float_tensors(
    draw: st.DrawFn,
    shape: tuple[int, ...] | None = None,
    dtype: torch.dtype = torch.float64,
    min_value: float = -10.0,
    max_value: float = 10.0,
    min_magnitude: float = 0.0,
) -> torch.Tensor:
    """A small tensor with finite entries in [min_value, max_value] and |entry| >= min_magnitude.

    ``shape`` defaults to a drawn one from ``shapes()``. ``min_magnitude`` keeps entries off
    a kink (L1 at 0) where finite differences and subgradients disagree.
    """
    if shape is None:
        shape = draw(shapes())
    width = 32 if dtype in (torch.float32, torch.float16, torch.bfloat16) else 64
    elements = st.floats(
        min_value=min_value, max_value=max_value, allow_nan=False, width=width
    ).filter(lambda v: abs(v) >= min_magnitude)
    values = draw(st.lists(elements, min_size=math.prod(shape), max_size=math.prod(shape)))
    return torch.tensor(values, dtype=dtype).reshape(shape)


@st.composite
def positive_tensors(
    draw: st.DrawFn, shape: tuple[int, ...] | None = None, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """A tensor with entries in [1e-3, 1e3]: safe to normalise by its sums along any dim."""
    return draw(float_tensors(shape=shape, dtype=dtype, min_value=1e-3, max_value=1e3))


@st.composite
def logit_batches(
    draw: st.DrawFn,
    max_batch: int = 6,
    min_classes: int = 2,
    max_classes: int = 8,
    bound: float = 10.0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """A (batch, K) tensor of logits in [-bound, bound]."""
    batch = draw(st.integers(min_value=1, max_value=max_batch))
    k = draw(st.integers(min_value=min_classes, max_value=max_classes))
    return draw(float_tensors(shape=(batch, k), dtype=dtype, min_value=-bound, max_value=bound))


@st.composite
def class_labels(draw: st.DrawFn, batch: int, k: int) -> torch.Tensor:
    """``batch`` int64 class indices in [0, k)."""
    values = draw(st.lists(st.integers(0, k - 1), min_size=batch, max_size=batch))
    return torch.tensor(values, dtype=torch.int64)


@st.composite
def probability_rows(draw: st.DrawFn, batch: int, k: int) -> torch.Tensor:
    """A float64 (batch, k) tensor of target distributions (non-negative rows summing to 1)."""
    weights = draw(float_tensors(shape=(batch, k), min_value=0.0, max_value=1.0))
    weights = weights + 1e-3  # keep every row's sum away from 0
    return weights / weights.sum(dim=-1, keepdim=True)


@st.composite
def dropout_probs(draw: st.DrawFn, min_p: float = 0.05, max_p: float = 0.95) -> float:
    """A dropout probability in [min_p, max_p], where normal approximations of counts hold."""
    return draw(st.floats(min_value=min_p, max_value=max_p))


@st.composite
def batch_plans(
    draw: st.DrawFn, max_n: int = 40, max_epoch: int = 3, allow_oversized: bool = False
) -> tuple[int, int, int]:
    """``(n, batch_size, epoch)`` for ``stability.notes.data.batches``.

    ``batch_size <= n`` unless ``allow_oversized`` (only the ``keep`` policy accepts more).
    """
    n = draw(st.integers(min_value=1, max_value=max_n))
    max_batch = 2 * n if allow_oversized else n
    batch_size = draw(st.integers(min_value=1, max_value=max_batch))
    epoch = draw(st.integers(min_value=0, max_value=max_epoch))
    return n, batch_size, epoch
