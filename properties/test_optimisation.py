"""Optimisation: learning rate, and evaluation mode (``net.eval()``, ``torch.no_grad``).

The notes: too large a learning rate gives large parameters and larger gradients (it
diverges), too small makes no progress. On a quadratic the edge is exact: gradient descent
is stable iff lr < 2 / lambda_max(Hessian). The notes also say that after ``net.eval()``
"PyTorch does not compute gradients". That is ``torch.no_grad``'s job: eval mode alone
still builds the autograd graph (the witness below shows it); what eval mode does is make
dropout (and batch norm) deterministic.
"""

import contextlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds
from torch import nn
from witness import assert_fails_on

CHAPTER = "Optimisation: learning rate and eval mode"

# -- learning rate on a quadratic --------------------------------------------------------------

EIG_MIN, EIG_MAX = 1.0, 10.0  # condition number 10: convergence at 0.9 x the edge is fast
GD_STEPS = 1000
# On f(w) = w^T A w / 2 gradient descent is w <- (I - lr A) w, so along eigenvector i the
# error is multiplied by (1 - lr lambda_i) each step, exactly. At lr = c * 2 / lambda_max
# the worst factor is max(|1 - 2c lambda_min / lambda_max|, |1 - 2c|):
#   c <= 0.95: at most max(1 - 2 * 0.5 / 10, 0.9) = 0.9, so 1000 steps shrink by 1e-45;
#   c >= 1.05: the top direction grows by >= 1.1^1000 = 1e41 times its share of w_0.
# The verdict thresholds sit tens of orders of magnitude inside both (float64 holds 1e308).
CONVERGED_BELOW = 1e-12
DIVERGED_ABOVE = 1e12


def random_quadratic(n: int, seed: int) -> torch.Tensor:
    """A random n x n positive-definite Hessian with spectrum in [1, 10], both ends included."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    inner = EIG_MIN + (EIG_MAX - EIG_MIN) * torch.rand(n, generator=gen, dtype=torch.float64)
    eig = torch.cat([torch.tensor([EIG_MIN, EIG_MAX], dtype=torch.float64), inner])[:n]
    if n == 1:
        eig = torch.tensor([EIG_MAX], dtype=torch.float64)
    return (q * eig) @ q.T


def gd_outcome(hessian: torch.Tensor, lr: float, seed: int) -> str:
    """'converged' or 'diverged' (or 'neither') after GD_STEPS of plain gradient descent."""
    gen = torch.Generator().manual_seed(seed + 1)
    w0 = torch.randn(hessian.shape[0], generator=gen, dtype=torch.float64)
    w = w0.clone()
    for _ in range(GD_STEPS):
        w = w - lr * (hessian @ w)  # grad of w^T A w / 2 is A w
    ratio = float(w.norm() / w0.norm())
    if ratio < CONVERGED_BELOW:
        return "converged"
    if ratio > DIVERGED_ABOVE or not math.isfinite(ratio):
        return "diverged"
    return "neither"


def edge(hessian: torch.Tensor) -> float:
    """The stability edge 2 / lambda_max."""
    return 2.0 / float(torch.linalg.eigvalsh(hessian).max())


def mean_edge(hessian: torch.Tensor) -> float:
    """Known-bad: 2 / mean eigenvalue, an edge set by the average curvature (too optimistic)."""
    return 2.0 / float(torch.linalg.eigvalsh(hessian).mean())


def check_edge(
    edge_of: Callable[[torch.Tensor], float],
    hessian: torch.Tensor,
    seed: int,
    below: float,
    above: float,
) -> None:
    """GD converges at 0.9 and ``below`` times ``edge_of(hessian)``, diverges at 1.1, ``above``."""
    lr = edge_of(hessian)
    verdicts = [(c, "converged") for c in (0.9, below)] + [(c, "diverged") for c in (1.1, above)]
    for c, want in verdicts:
        got = gd_outcome(hessian, c * lr, seed)
        assert got == want, f"{c} x edge: {got}, not {want}"


@given(
    n=st.integers(min_value=1, max_value=12),
    seed=seeds(),
    below=st.floats(min_value=0.5, max_value=0.95),
    above=st.floats(min_value=1.05, max_value=1.5),
)
def test_learning_rate_edge(n: int, seed: int, below: float, above: float) -> None:
    """GD converges at lr < 2/lambda_max and diverges above it (e.g. 0.9x and 1.1x)."""
    check_edge(edge, random_quadratic(n, seed), seed, below, above)


@given(n=st.integers(min_value=2, max_value=6), seed=seeds())
def test_witness_learning_rate_edge(n: int, seed: int) -> None:
    """An edge from the mean eigenvalue (2 / mean: too optimistic) fails the same check.

    With eigenvalues 1 and 10 and n - 2 more in [1, 10], n <= 6 gives mean <= 51 / 6 = 8.5, so
    lr = 0.9 * 2 / mean multiplies the top direction by |1 - 10 lr| >= 18 / 8.5 - 1 = 1.12 per
    step: 1e48 after 1000 steps.
    """
    error = assert_fails_on(mean_edge, check_edge, random_quadratic(n, seed), seed, 0.9, 1.1)
    assert "0.9 x edge: diverged" in str(error)


# -- eval mode and no_grad ---------------------------------------------------------------------


def dropout_net(width: int, p: float, seed: int) -> nn.Sequential:
    """A small MLP with dropout, the notes' example of a train/eval difference."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(width, width), nn.ReLU(), nn.Dropout(p), nn.Linear(width, width), nn.Dropout(p)
    )


def builds_graph(out: torch.Tensor) -> bool:
    """Whether autograd recorded how ``out`` was made."""
    return out.requires_grad or out.grad_fn is not None


def check_no_graph(
    context: Callable[[], AbstractContextManager[object]], net: nn.Module, x: torch.Tensor
) -> None:
    """A forward pass inside ``context()`` leaves no autograd graph behind."""
    with context():
        out = net(x)
    assert not builds_graph(out), "autograd recorded the forward pass"


eval_cases = st.tuples(
    st.integers(min_value=2, max_value=32),  # width
    st.integers(min_value=1, max_value=16),  # batch
    st.floats(min_value=0.1, max_value=0.9),  # dropout p
    seeds(),
)


@given(eval_cases, st.booleans())
def test_no_grad_builds_no_graph(case: tuple[int, int, float, int], train: bool) -> None:
    """Under ``torch.no_grad`` (or inference mode), in train or eval mode, no graph is built."""
    width, batch, p, seed = case
    net = dropout_net(width, p, seed).train(train)
    x = torch.randn(batch, width, requires_grad=True)
    check_no_graph(torch.no_grad, net, x)
    check_no_graph(torch.inference_mode, net, x)


@given(eval_cases)
def test_witness_no_grad_builds_no_graph(case: tuple[int, int, float, int]) -> None:
    """``net.eval()`` alone does build a graph (the notes' claim is wrong): same check fails."""
    width, batch, p, seed = case
    net = dropout_net(width, p, seed).eval()
    x = torch.randn(batch, width)
    assert_fails_on(contextlib.nullcontext, check_no_graph, net, x, variant_name="eval() alone")
    net(x).sum().backward()  # and the gradients really are computed
    assert all(prm.grad is not None for prm in net.parameters())


def two_calls_equal(net: nn.Module, x: torch.Tensor) -> bool:
    """Whether two forward passes of the same input are bitwise equal."""
    return torch.equal(net(x), net(x))


def check_deterministic(net: nn.Module, x: torch.Tensor) -> None:
    assert two_calls_equal(net, x), "two forward passes of the same input differ"


@given(eval_cases)
def test_eval_is_deterministic(case: tuple[int, int, float, int]) -> None:
    """In eval mode two calls agree bitwise (dropout is off), with or without no_grad."""
    width, batch, p, seed = case
    net = dropout_net(width, p, seed).eval()
    x = torch.randn(batch, width)
    check_deterministic(net, x)
    with torch.no_grad():
        check_deterministic(net, x)
        assert torch.equal(net(x), net(x).detach())


@given(eval_cases)
def test_witness_eval_is_deterministic(case: tuple[int, int, float, int]) -> None:
    """Train mode with dropout fails the same check.

    Two independent masks of the last dropout agree at an entry with probability
    p^2 + (1-p)^2 <= 0.82 (p in [0.1, 0.9]); a tiny drawn case could agree by chance, so the
    check runs on 32 rows of 64 features: all agree with probability <= 0.82^2048 = 1e-177.
    """
    _, _, p, seed = case
    width, batch = 64, 32
    net = dropout_net(width, p, seed).train()
    assert_fails_on(net, check_deterministic, torch.randn(batch, width))
