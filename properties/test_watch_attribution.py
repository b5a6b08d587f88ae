"""``stability.watch`` names the module that made the first inf, in a user's own network.

Claim (issue 15): inside the user's own loop the watch attributes the first non-finite value
to a module by its qualified name, a phase and an operator, as the doctor does for the MLP.
Checked on pre-norm residual stacks (LayerNorm, Linear, skip) of any depth 2-5 with an
overflow planted in one block's Linear: its weights set to a constant 3e38 (finite, 0.88x
float32's max), so every product of that matmul with a non-zero LayerNorm output overflows.
LayerNorm's outputs have unit variance per row, so a row of 8 holds a non-zero entry with
certainty (all-zero would need every entry equal to the row mean: measure zero), and the
planted addmm is the first operator to leave the finite range: an inf where one row's
overflowed products share a sign, a NaN (+inf plus -inf, "inf - inf") where they do not.

Witness: a detector that sees only the model's output (what a loss check or a hook on the
model alone can see) notices the failure but names the model, not the block.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from witness import assert_fails_on

from stability.integrations.watch import Event, NonFiniteError, Watch
from stability.train.attribution import ROOT, Attribution

WIDTH = 8
PLANTED = 3e38  # finite in float32 (max 3.4e38); any product with |x| > 1.14 overflows


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(WIDTH)
        self.fc = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = x + self.fc(self.norm(x))
        return y


class OutputOnlyWatch(Watch):
    """The known-bad variant: it sees the non-finite output but attributes nothing inside."""

    def _alarm(self, step: int, phase: str, bad_parameter: str | None) -> None:
        self.first = Event(step, Attribution(ROOT, phase, "infinite"))
        raise NonFiniteError(step, self.first.attribution)


def planted_stack(depth: int, block: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(*[Block() for _ in range(depth)])
    with torch.no_grad():
        model[block].fc.weight.fill_(PLANTED)
    return model


def check_attributed(watch_class: type[Watch], depth: int, block: int, seed: int) -> None:
    model = planted_stack(depth, block, seed)
    x = torch.randn(4, WIDTH, generator=torch.Generator().manual_seed(seed))
    with pytest.raises(NonFiniteError) as caught, watch_class(model, every=3):
        model(x).sum().backward()
    a = caught.value.attribution
    assert (a.module, a.phase) == (f"{block}.fc", "forward"), a.line()
    assert a.op == "addmm" and a.mechanism in ("overflow", "inf - inf"), a.line()


blocks = st.integers(2, 5).flatmap(lambda d: st.tuples(st.just(d), st.integers(0, d - 1)))


@given(depth_block=blocks, seed=st.integers(0, 2**16))
def test_planted_overflow_is_named_by_module_phase_operator(
    depth_block: tuple[int, int], seed: int
) -> None:
    check_attributed(Watch, *depth_block, seed)


@given(depth_block=blocks, seed=st.integers(0, 2**16))
def test_witness_planted_overflow_is_named_by_module_phase_operator(
    depth_block: tuple[int, int], seed: int
) -> None:
    assert_fails_on(OutputOnlyWatch, check_attributed, *depth_block, seed)
