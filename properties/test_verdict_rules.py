"""The per-module verdict rules (``usermodel.verdicts``), each on real modules, each with a
witness: the same check on a known-bad variant fails.

- A norm's output has mean square ``mean(gain^2) + mean(bias^2)`` whatever its input's
  scale, while that scale is well above eps; below eps it vanishes.
- A layer is judged by its own gain: a Linear with ``Var(W) = c / fan_in`` has gain about
  ``c``, stable up to ``10^BAND``; exploding beyond.
- A residual stack is judged by its stream: any branch scale that keeps each block's gain
  under ``10^BLOCK_BAND`` is stable, and a block whose weights are scaled up is the one
  named, wherever it sits.
- A module with no parameters, or frozen ones, is never called exploding or vanishing.
- float16 underflow is judged by the squared norm flushing loses, not the count.
"""

import math
from typing import Any

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn
from witness import assert_fails_on

from stability.core.probe import projection_loss
from stability.usermodel.findings import judge, summary
from stability.usermodel.probe import probe_modules

STABLE_GROWTH = ("stable", "float16-underflow")  # neither explodes nor vanishes


def _judged(model: nn.Module, x: torch.Tensor) -> dict[str, dict[str, Any]]:
    rows = judge(probe_modules(model, lambda: model(x), projection_loss))
    return {r["module"]: r for r in rows}


def _signal(seed: int, scale: float, shape: tuple[int, ...] = (16, 32)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(shape, generator=gen)


# -- norms ---------------------------------------------------------------------------------


class NormNet(nn.Module):
    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x))


def check_norm_meets_its_expectation(input_log10_scale: float, seed: int = 0) -> None:
    torch.manual_seed(seed)
    norm = nn.LayerNorm(32, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
    row = _judged(NormNet(norm), _signal(seed, 10.0**input_log10_scale))["norm"]
    assert row["role"] == "norm"
    assert row["verdict"] == "stable", row["reason"]
    w, b = norm.weight.detach().double(), norm.bias.detach().double()
    expected = float(w.pow(2).mean() + b.pow(2).mean())
    assert row["expected_ms"] == expected
    assert abs(math.log10(row["fwd_ms"] / expected)) < 0.1  # 16 x 32 values: sd ~ 0.02 dec


@given(st.floats(min_value=-1.5, max_value=4.0), st.integers(0, 2**16))
@example(-1.5, 0)
def test_norm_meets_its_expectation(input_log10_scale: float, seed: int) -> None:
    """Fed any scale from 10^-1.5 (mean square 1e-3, 100x eps) up, a LayerNorm's output mean
    square is mean(gain^2) + mean(bias^2): stable, not 'explodes' against a small input."""
    check_norm_meets_its_expectation(input_log10_scale, seed)


def test_witness_norm_meets_its_expectation() -> None:
    """Below eps (mean square 1e-10 against eps 1e-5) the norm divides by eps: vanishes, and
    the reason says so."""
    failure = assert_fails_on(-5.0, check_norm_meets_its_expectation)
    assert "vanishes" in str(failure) and "below eps" in str(failure)


# -- a layer's own gain ----------------------------------------------------------------------


def check_layer_gain_is_stable(log10_c: float, seed: int = 0) -> None:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(32, 32, bias=False))
    with torch.no_grad():
        net[0].weight.normal_(0.0, math.sqrt(10.0**log10_c / 32))
    row = _judged(net, _signal(seed, 1.0))["0"]
    # gain ~ c: 32 outputs x 16 samples, relative sd of the mean square about 1/sqrt(256)
    assert abs(row["fwd_gain_log10"] - log10_c) < 0.5, row
    assert row["verdict"] in STABLE_GROWTH, row["reason"]


@given(st.floats(min_value=-4.0, max_value=1.0), st.integers(0, 2**16))
@example(1.0, 0)
def test_layer_gain_is_stable(log10_c: float, seed: int) -> None:
    """Var(W) = c / fan_in gives a gain of about c: any c up to 10 (Kaiming's 2, a scaled-
    down residual branch's 1e-4) is no explosion."""
    check_layer_gain_is_stable(log10_c, seed)


def test_witness_layer_gain_is_stable() -> None:
    failure = assert_fails_on(3.0, check_layer_gain_is_stable)
    assert "explodes" in str(failure)


# -- the stream through a stack --------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, width: int, branch: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)
        with torch.no_grad():
            self.fc.weight.normal_(0.0, branch / math.sqrt(width))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(torch.tanh(self.norm(x)))


class ResNet(nn.Module):
    def __init__(self, depth: int, branch: float, bad: int | None, factor: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(32, branch) for _ in range(depth))
        if bad is not None:
            with torch.no_grad():
                self.blocks[bad].fc.weight.mul_(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def check_stream_is_stable(model: nn.Module, depth: int) -> None:
    judged = _judged(model, _signal(0, 1.0))
    s = summary(list(judged.values()))
    assert [st_["stack"] for st_ in s["stacks"]] == ["blocks"]
    assert s["verdict"] in STABLE_GROWTH, s.get("origin")


@given(st.integers(2, 8), st.floats(min_value=0.0, max_value=1.0))
def test_stream_is_stable(depth: int, branch: float) -> None:
    """A pre-norm residual stack whose branches are at most the stream's size: stable."""
    torch.manual_seed(depth)
    check_stream_is_stable(ResNet(depth, branch, None, 1.0), depth)


def check_named_block_is_the_planted_one(depth: int, bad: int) -> None:
    torch.manual_seed(depth)
    model = ResNet(depth, 0.5, bad, 1e3)
    origin = summary(list(_judged(model, _signal(0, 1.0)).values()))["origin"]
    assert origin["block"] == f"blocks.{bad}", origin


@settings(max_examples=8)  # each example probes the model twice
@given(st.data())
def test_witness_stream_is_stable(data: st.DataObject) -> None:
    """The witness, at any depth and any block: weights x1e3 in one block fail the check,
    and the block named as where it starts is that one."""
    depth = data.draw(st.integers(2, 8))
    bad = data.draw(st.integers(0, depth - 1))
    torch.manual_seed(depth)
    assert_fails_on(ResNet(depth, 0.5, bad, 1e3), check_stream_is_stable, depth)
    check_named_block_is_the_planted_one(depth, bad)


# -- modules that are not judged for growth -------------------------------------------------


class Rotary(nn.Module):
    """Parameter-free, as a rotary embedding: its output's scale is a table's, not a gain."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(x.shape[-1], dtype=x.dtype)
        return x * torch.cos(pos) * 1e4


class WithRotary(nn.Module):
    def __init__(self, frozen: bool, trainable: bool = False) -> None:
        super().__init__()
        self.table = nn.Linear(32, 32, bias=False)
        with torch.no_grad():
            self.table.weight.mul_(1e4)  # a huge fixed table: frozen by design
        self.table.weight.requires_grad_(not frozen)
        self.rotary = Rotary() if not trainable else nn.Linear(32, 32, bias=False)
        if trainable:
            with torch.no_grad():
                self.rotary.weight.normal_(0.0, 100.0)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rotary(self.table(x)) * 1e-6)


def check_unjudged_are_not_flagged(model: nn.Module) -> None:
    judged = _judged(model, _signal(0, 1.0))
    for name in ("table", "rotary"):
        assert judged[name]["verdict"] not in ("explodes", "vanishes"), judged[name]["reason"]


@given(st.integers(0, 3))
def test_unjudged_are_not_flagged(seed: int) -> None:
    """A frozen table and a parameter-free map are marked as such (their gain is their
    design), never 'explodes' or 'vanishes'."""
    torch.manual_seed(seed)
    model = WithRotary(frozen=True)
    check_unjudged_are_not_flagged(model)
    judged = _judged(model, _signal(0, 1.0))
    assert judged["table"]["role"] == "frozen" and judged["rotary"]["role"] == "parameter-free"


def test_witness_unjudged_are_not_flagged() -> None:
    """The same maps with trainable weights are layers and are judged: they explode."""
    torch.manual_seed(0)
    assert_fails_on(WithRotary(frozen=False, trainable=True), check_unjudged_are_not_flagged)


# -- float16 underflow ----------------------------------------------------------------------


class Scaled(nn.Module):
    """A branch whose output, and so its gradient, is scaled by a layer scale."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.fc = nn.Linear(32, 32)
        self.gamma = nn.Parameter(torch.full((32,), scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.fc(x)


def check_float16_gradients_survive(scale: float) -> None:
    torch.manual_seed(0)
    row = _judged(nn.Sequential(Scaled(scale)), _signal(0, 1.0))["0.fc"]
    assert row["verdict"] != "float16-underflow", row["reason"]


@given(st.floats(min_value=-4.0, max_value=0.0))
def test_float16_gradients_survive(log10_scale: float) -> None:
    """A layer scale down to 1e-4 leaves the branch's gradients (unit-variance gradient at
    the output times the scale) in float16's range: a few values near 0 flush, which costs
    nothing of the squared norm."""
    check_float16_gradients_survive(10.0**log10_scale)


def test_witness_float16_gradients_survive() -> None:
    """ConvNeXt's 1e-6 layer scale times a small gradient: the branch's gradient flushes,
    and the finding names the layer scale."""
    failure = assert_fails_on(1e-9, check_float16_gradients_survive)
    assert "float16" in str(failure) and "0.gamma" in str(failure)
