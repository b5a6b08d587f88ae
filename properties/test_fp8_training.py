"""Emulated fp8 training is fp8 on the operands, exactly, in both directions.

Under ``Fp8Training`` a Linear's forward is bit-identical to ``F.linear`` on its input and
weight quantised to E4M3 by the recipe, and every gradient it passes back (input, weight,
bias) is bit-identical to the one ``F.linear``'s backward makes from the gradient arriving
at its output quantised to E5M2: the quantisers add nothing else. The witness drops the
backward quantiser (the gradient arrives unquantised), and the same check fails: a random
gradient holds values that are not on E5M2's grid of 3 significant bits.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import seeds
from torch import nn
from witness import assert_fails_on

from stability.core.lowp.formats import get_format
from stability.core.lowp.quantize import quantize
from stability.core.lowp.recipes import AmaxHistory, get_recipe
from stability.core.lowp.training import Fp8Training

HYBRID = get_format("hybrid")
RECIPES = ("none", "tensor", "row", "delayed:2")


def _q(x: torch.Tensor, recipe: str, backward: bool = False) -> torch.Tensor:
    r = get_recipe(recipe)
    history = AmaxHistory(r.history) if r.kind == "delayed" else None  # first step: current amax
    return quantize(x, HYBRID, r, backward=backward, history=history).values


@pytest.mark.parametrize("quantize_grad", [True])
@given(
    seed=seeds(),
    dims=st.tuples(*[st.integers(1, 6)] * 3),
    recipe=st.sampled_from(RECIPES),
    log2_grad=st.integers(-30, 12),
)
@example(seed=0, dims=(2, 3, 4), recipe="tensor", log2_grad=0)
def test_emulated_linear_is_fp8_on_quantised_operands(
    quantize_grad: bool, seed: int, dims: tuple[int, int, int], recipe: str, log2_grad: int
) -> None:
    batch, fan_in, fan_out = dims
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(fan_in, fan_out)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(fan_out, fan_in, generator=g))
        lin.bias.copy_(torch.randn(fan_out, generator=g))
    x = torch.randn(batch, fan_in, generator=g, requires_grad=True)
    upstream = torch.randn(batch, fan_out, generator=g) * 2.0**log2_grad
    with Fp8Training(lin, "hybrid", recipe, quantize_grad=quantize_grad):
        y = lin(x)
        y.backward(upstream)
    qx = _q(x.detach(), recipe).requires_grad_()
    qw = _q(lin.weight.detach(), recipe).requires_grad_()
    b = lin.bias.detach().clone().requires_grad_()
    ref = F.linear(qx, qw, b)
    assert torch.equal(y.detach(), ref.detach())
    grads = torch.autograd.grad(ref, [qx, qw, b], _q(upstream, recipe, backward=True))
    assert x.grad is not None and lin.weight.grad is not None and lin.bias.grad is not None
    for got, want in zip([x.grad, lin.weight.grad, lin.bias.grad], grads, strict=True):
        assert torch.equal(got, want)


def test_witness_emulated_linear_is_fp8_on_quantised_operands() -> None:
    assert_fails_on(False, test_emulated_linear_is_fp8_on_quantised_operands)
