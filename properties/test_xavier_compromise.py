"""Numerical stability: Xavier's compromise when fan_in != fan_out.

The notes derive Xavier initialisation from two demands: the forward pass keeps the variance
when fan_in * Var(W) = 1, the backward pass when fan_out * Var(W) = 1; with unequal widths
both cannot hold, and Var(W) = 2 / (fan_in + fan_out) splits the difference. Here a stack of
alternating Linear(fan_in, fan_out), Linear(fan_out, fan_in) layers is probed in float64 and
each layer's measured forward and backward factor is held against fan_in * Var(W) and
fan_out * Var(W), for every init with a stated variance.
"""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from witness import assert_fails_on

from stability.core.inits import INITS, get_init, init_linear_
from stability.core.probe import probe

CHAPTER = "Numerical stability: exploding and vanishing gradients"

BATCH = 64
SEEDS = (0, 1, 2)
Z = 5.0  # sigma margin: the variance here is derived, not estimated
STATED_INITS = sorted(name for name, init in INITS.items() if init.variance is not None)

# Small float64 work: one thread is faster than two contending ones.
pytestmark = pytest.mark.usefixtures("one_thread")


# -- Xavier's compromise with unequal widths ---------------------------------------------------


def unequal_stack(fan_in: int, fan_out: int, init: str, seed: int) -> nn.Sequential:
    """Linear(fan_in, fan_out), Linear(fan_out, fan_in), ... (4 layers), float64, no bias."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [fan_in, fan_out, fan_in, fan_out, fan_in]
    layers = [
        nn.Linear(a, b, bias=False, dtype=torch.float64) for a, b in itertools.pairwise(sizes)
    ]
    for layer in layers:
        init_linear_(layer, init, gen)
    return nn.Sequential(*layers)


def layer_factors(fan_in: int, fan_out: int, init: str) -> tuple[np.ndarray, np.ndarray]:
    """Measured ln factors per seed and layer, forward (out/in) and backward (in/out)."""
    fwd, bwd = [], []
    for seed in SEEDS:
        model = unequal_stack(fan_in, fan_out, init, seed)
        gen = torch.Generator().manual_seed(seed + 1_000_003)
        x = torch.randn(BATCH, fan_in, generator=gen, dtype=torch.float64, requires_grad=True)
        stats = probe(model, x, modules=list(model))
        assert x.grad is not None
        act = [float(x.detach().var(correction=0))] + [s.act_var for s in stats]
        grad = [float(x.grad.var(correction=0))] + [s.grad_var for s in stats]
        fwd.append(np.log(np.array(act[1:]) / np.array(act[:-1])))
        bwd.append(np.log(np.array(grad[:-1]) / np.array(grad[1:])))
    return np.array(fwd), np.array(bwd)


def factors_match(measured: np.ndarray, theory: np.ndarray, summed_over: np.ndarray) -> bool:
    """Per layer: |mean ln(measured / theory)| <= v/2 + Z sqrt(v / S), ``v = 2 / summed_over``.

    Given a layer's input ``a`` (batch x n), each of the ``m`` output columns of a linear
    layer with i.i.d. zero-mean weights is ``a w`` with relative variance
    ``2 tr(C^2) / tr(C)^2 <= 2`` (``C = a a^T``; Gaussian weights, less for uniform or
    orthogonal ones), so the mean over ``m`` columns has relative variance <= 2/m: ``m`` is
    fan_out forward and fan_in backward. Jensen: the ln sits up to v/2 low.
    """
    v = 2.0 / summed_over
    tol = v / 2.0 + Z * np.sqrt(v / measured.shape[0])
    return bool((np.abs(measured.mean(axis=0) - np.log(theory)) <= tol).all())


def check_factors(theory: np.ndarray, measured: np.ndarray, summed_over: np.ndarray) -> None:
    """The measured ln factors per layer are ln ``theory`` within the derived tolerance."""
    assert factors_match(measured, theory, summed_over), (measured.mean(axis=0), theory)


def xavier_theory(
    fan_in: int, fan_out: int, init: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per layer of ``unequal_stack``: forward factor, backward factor, (fan_in, fan_out) pairs."""
    var = get_init(init).variance
    assert var is not None
    shapes = np.array([(fan_in, fan_out), (fan_out, fan_in)] * 2)  # (layer fan_in, fan_out)
    weight_var = np.array([var(int(fi), int(fo)) for fi, fo in shapes])
    return shapes[:, 0] * weight_var, shapes[:, 1] * weight_var, shapes


@given(
    fan_in=st.integers(min_value=32, max_value=256),
    fan_out=st.integers(min_value=32, max_value=256),
    init=st.sampled_from(STATED_INITS),
)
def test_xavier_compromise(fan_in: int, fan_out: int, init: str) -> None:
    """Forward factor fan_in*Var(W), backward fan_out*Var(W); Xavier averages the two demands."""
    fwd, bwd = layer_factors(fan_in, fan_out, init)
    theory_fwd, theory_bwd, shapes = xavier_theory(fan_in, fan_out, init)
    check_factors(theory_fwd, fwd, summed_over=shapes[:, 1])
    check_factors(theory_bwd, bwd, summed_over=shapes[:, 0])
    if init == "xavier_normal":  # the compromise: the two factors average to exactly 1
        assert np.allclose((theory_fwd + theory_bwd) / 2.0, 1.0)


def test_witness_xavier_compromise() -> None:
    """Swapping the factors (forward fan_out*Var(W)) is rejected when fan_out = 4 fan_in."""
    fan_in, fan_out = 64, 256
    fwd, bwd = layer_factors(fan_in, fan_out, "xavier_normal")
    theory_fwd, theory_bwd, shapes = xavier_theory(fan_in, fan_out, "xavier_normal")
    swapped = "the other direction's factors"
    assert_fails_on(theory_bwd, check_factors, fwd, shapes[:, 1], variant_name=swapped)
    assert_fails_on(theory_fwd, check_factors, bwd, shapes[:, 0], variant_name=swapped)
