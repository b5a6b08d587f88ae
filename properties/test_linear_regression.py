"""Linear regression: mean vs sum loss under batching, minibatch remainder policies, detach.

The notes' QA: averaging the loss makes the gradient's size independent of the batch size
(decoupled from the learning rate); three ways to handle n not divisible by the batch size
(keep the short batch, drop it, fill it from the next epoch); ``detach`` takes a tensor out
of the graph so no gradient flows through it.
"""

from collections import Counter
from collections.abc import Callable

import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import batch_plans, float_tensors, seeds
from witness import assert_fails_on

from stability.notes.data import batches, epoch_permutation
from stability.notes.losses import l2_loss

CHAPTER = "Linear regression"

GRAD_RTOL = 1e-10  # float64; a batch of <= 16 identical rows: a few ulps of summation error
GRAD_ATOL = 1e-10

Reduce = Callable[[torch.Tensor], torch.Tensor]


# --- gradient of the mean loss is batch-size invariant; the sum loss's grows B-fold -----


def _linreg_grad(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, reduce: Reduce) -> torch.Tensor:
    """Gradient w.r.t. (w, b) of ``reduce(l2_loss(x w + b, y))``; x is (B, d), y is (B,)."""
    w = w.clone().requires_grad_(True)
    b = torch.zeros((), dtype=x.dtype, requires_grad=True)
    reduce(l2_loss(x @ w + b, y)).backward()
    assert w.grad is not None and b.grad is not None
    return torch.cat([w.grad, b.grad.reshape(1)])


def _grad_scales(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, batch: int, reduce: Reduce, factor: float
) -> bool:
    """Does a batch of ``batch`` copies of (x, y) give ``factor`` x the one-sample gradient?"""
    single = _linreg_grad(x.unsqueeze(0), y.reshape(1), w, reduce)
    copies = _linreg_grad(x.expand(batch, -1), y.expand(batch), w, reduce)
    return torch.allclose(copies, factor * single, rtol=GRAD_RTOL, atol=GRAD_ATOL)


def check_grad_scales(
    reduce: Reduce, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, batch: int, factor: float
) -> None:
    assert _grad_scales(x, y, w, batch, reduce, factor), f"{batch} copies: not {factor}x"


@st.composite
def _regression_cases(
    draw: st.DrawFn,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    d = draw(st.integers(min_value=1, max_value=5))
    x = draw(float_tensors(shape=(d,)))
    y = draw(float_tensors(shape=()))
    w = draw(float_tensors(shape=(d,)))
    return x, y, w, draw(st.integers(min_value=1, max_value=16))


def _witness_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed (x, y, w) with a nonzero residual: a zero gradient would scale by any factor."""
    x = torch.tensor([1.0, -2.0], dtype=torch.float64)
    return x, torch.tensor(3.0, dtype=torch.float64), torch.tensor([0.5, 0.25]).double()


@given(_regression_cases())
def test_mean_loss_gradient_batch_invariant(
    case: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int],
) -> None:
    x, y, w, batch = case
    check_grad_scales(torch.mean, x, y, w, batch, factor=1.0)


def test_witness_mean_loss_gradient_batch_invariant() -> None:
    # The summed loss of 8 copies has 8 times the gradient: not batch-size invariant.
    assert_fails_on(torch.sum, check_grad_scales, *_witness_case(), 8, factor=1.0)


@given(_regression_cases())
def test_sum_loss_gradient_grows_with_batch(
    case: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int],
) -> None:
    x, y, w, batch = case
    check_grad_scales(torch.sum, x, y, w, batch, factor=float(batch))


def test_witness_sum_loss_gradient_grows_with_batch() -> None:
    # The mean loss does not grow: 8 copies give the single-sample gradient, not 8 times it.
    assert_fails_on(torch.mean, check_grad_scales, *_witness_case(), 8, factor=8.0)


# --- minibatch remainder policies --------------------------------------------------------


def _epoch(n: int, batch_size: int, policy: str, epoch: int, seed: int) -> list[torch.Tensor]:
    return list(batches(n, batch_size, policy, epoch, torch.Generator().manual_seed(seed)))


def _each_exactly_once(n: int, epoch_batches: list[torch.Tensor]) -> bool:
    """The promise of ``keep``: the epoch's batches together are a permutation of range(n)."""
    visited = torch.cat(epoch_batches).tolist() if epoch_batches else []
    return sorted(visited) == list(range(n))


def check_each_exactly_once(policy: str, n: int, batch_size: int, epoch: int, seed: int) -> None:
    got = _epoch(n, batch_size, policy, epoch, seed)
    assert _each_exactly_once(n, got), f"{policy}: n={n}, B={batch_size}"


@given(batch_plans(allow_oversized=True), seeds())
def test_batches_keep_visits_each_once(plan: tuple[int, int, int], seed: int) -> None:
    n, batch_size, epoch = plan
    check_each_exactly_once("keep", n, batch_size, epoch, seed)
    got = _epoch(n, batch_size, "keep", epoch, seed)
    assert all(len(b) == batch_size for b in got[:-1])  # only the last batch may be short
    # Each epoch is reproducible on its own (resuming regenerates the same order).
    again = _epoch(n, batch_size, "keep", epoch, seed)
    assert all(torch.equal(a, b) for a, b in zip(got, again, strict=True))


def test_witness_batches_keep_visits_each_once() -> None:
    # drop skips the n mod B = 2 leftover samples, so it does not visit each sample once.
    assert_fails_on("drop", check_each_exactly_once, 10, 4, 0, seed=0)


def _full_and_at_most_once(n: int, batch_size: int, epoch_batches: list[torch.Tensor]) -> bool:
    """The promise of ``drop``: n // B full batches, no sample twice, n mod B skipped."""
    visited = Counter(torch.cat(epoch_batches).tolist()) if epoch_batches else Counter()
    return (
        len(epoch_batches) == n // batch_size
        and all(len(b) == batch_size for b in epoch_batches)
        and all(c == 1 for c in visited.values())
        and len(visited) == n - n % batch_size
    )


def check_full_and_at_most_once(
    policy: str, n: int, batch_size: int, epoch: int, seed: int
) -> None:
    got = _epoch(n, batch_size, policy, epoch, seed)
    assert _full_and_at_most_once(n, batch_size, got), f"{policy}: n={n}, B={batch_size}"


@given(batch_plans(), seeds())
def test_batches_drop_full_batches(plan: tuple[int, int, int], seed: int) -> None:
    n, batch_size, epoch = plan
    check_full_and_at_most_once("drop", n, batch_size, epoch, seed)


def test_witness_batches_drop_full_batches() -> None:
    # keep yields a short last batch of 2 when n = 10, B = 4.
    assert_fails_on("keep", check_full_and_at_most_once, 10, 4, 0, seed=0)


def _stream_passes_once(n: int, batch_size: int, epochs: list[list[torch.Tensor]]) -> bool:
    """The promise of ``fill``: full batches, and each pass of n stream positions is a
    permutation of range(n) (borrowed samples are not visited again in the next epoch)."""
    flat = [b for epoch_batches in epochs for b in epoch_batches]
    if not flat or any(len(b) != batch_size for b in flat):
        return False
    stream = torch.cat(flat).tolist()
    passes = len(stream) // n
    if passes < len(epochs):  # E epochs must cover at least E full passes
        return False
    return all(sorted(stream[p * n : (p + 1) * n]) == list(range(n)) for p in range(passes))


EpochFn = Callable[[int, int, int, int], list[torch.Tensor]]  # (n, B, epoch, seed) -> batches


def fill(n: int, batch_size: int, epoch: int, seed: int) -> list[torch.Tensor]:
    return _epoch(n, batch_size, "fill", epoch, seed)


def check_stream_passes_once(
    make_epoch: EpochFn, n: int, batch_size: int, n_epochs: int, seed: int
) -> None:
    epochs = [make_epoch(n, batch_size, e, seed) for e in range(n_epochs)]
    assert _stream_passes_once(n, batch_size, epochs), f"n={n}, B={batch_size}"


@given(batch_plans(), st.integers(min_value=1, max_value=3), seeds())
def test_batches_fill_visits_each_once_per_pass(
    plan: tuple[int, int, int], n_epochs: int, seed: int
) -> None:
    n, batch_size, _ = plan
    check_stream_passes_once(fill, n, batch_size, n_epochs, seed)


def _fill_then_restart(n: int, batch_size: int, epoch: int, seed: int) -> list[torch.Tensor]:
    """Known-bad fill: pad the short batch from the next epoch, but start that epoch afresh,
    so the borrowed samples are visited twice in a row."""
    gen = torch.Generator().manual_seed(seed)
    perm = epoch_permutation(n, epoch, gen)
    out = list(perm.split(batch_size))
    if len(out[-1]) < batch_size:
        borrowed = epoch_permutation(n, epoch + 1, gen)[: batch_size - len(out[-1])]
        out[-1] = torch.cat([out[-1], borrowed])
    return out


def test_witness_batches_fill_visits_each_once_per_pass() -> None:
    assert_fails_on(_fill_then_restart, check_stream_passes_once, 10, 4, 3, seed=0)


# --- detach stops gradient flow -----------------------------------------------------------


def _grad_treats_as_constant(
    x: torch.Tensor, through: Callable[[torch.Tensor], torch.Tensor]
) -> bool:
    """For f(x) = sum(c * x) with c = through(x): is df/dx = c, i.e. no gradient through c?"""
    x = x.clone().requires_grad_(True)
    c = through(x)
    (c * x).sum().backward()
    assert x.grad is not None
    return torch.equal(x.grad, c.detach()) and not c.requires_grad


def check_treated_as_constant(
    through: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> None:
    assert _grad_treats_as_constant(x, through), "the gradient flowed through c"


def _squared_detached(t: torch.Tensor) -> torch.Tensor:
    return (t**2).detach()


def _not_detached(t: torch.Tensor) -> torch.Tensor:
    """Known-bad: c = x itself, still in the graph."""
    return t


@given(float_tensors(min_magnitude=1e-3))
def test_detach_stops_gradient(x: torch.Tensor) -> None:
    check_treated_as_constant(torch.Tensor.detach, x)
    check_treated_as_constant(_squared_detached, x)


def test_witness_detach_stops_gradient() -> None:
    # Without detach, d/dx sum(x * x) = 2x: the gradient also flows through c = x.
    assert_fails_on(_not_detached, check_treated_as_constant, torch.tensor([1.0, -2.0]).double())
