"""``stability.watch`` on real Hugging Face models, called as a training loop calls them.

Tiny GPT-2 and T5 (``examples/hf_tiny.py``) trained a few steps with ``model(**batch)``
(keyword arguments only) and their ``ModelOutput``'s own loss: every default module, the
attention modules whose output is a tuple included, records finite statistics; a planted
NaN raises ``NonFiniteError`` naming the module and the phase before the optimizer's step.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

from test_hf_testing import FC, broken_backward, overflow_to_nan

import stability
from examples import hf_tiny
from stability.integrations.watch import NonFiniteError


def train(model: nn.Module, batch: dict[str, torch.Tensor], steps: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()


@pytest.mark.parametrize(
    ("arch", "tuple_outputs"),
    [
        ("gpt2", ["transformer.h.0.attn", "transformer.h.1.attn"]),
        (
            "t5",
            [
                "encoder.block.0",
                "encoder.block.0.layer.0.SelfAttention",
                "decoder.block.1.layer.1.EncDecAttention",
            ],
        ),
    ],
)
def test_every_default_module_records_finite_statistics(
    arch: str, tuple_outputs: list[str]
) -> None:
    model = hf_tiny.build(arch).eval()
    batch = getattr(hf_tiny, f"{arch}_batch")()
    with stability.watch(model, every=2) as w:
        train(model, batch, 3)
    assert w.step == 3 and w.first is None  # kwargs-only calls are steps too
    wide = w.to_frame(wide=True)
    assert sorted(wide["step"].unique()) == [0, 2]
    names = [name for name, _ in w.named if name != "shared"]  # T5's: its stacks have their own
    assert set(wide["module"]) == set(names) and len(wide) == 2 * len(names)
    for column in ("act_var", "act_max_abs", "grad_var"):
        bad = wide[~wide[column].map(math.isfinite)]["module"].tolist()
        assert not bad, f"{column} not finite at {bad}"
    assert (wide["nonfinite"] == 0).all() and (wide["grad_var"] > 0).all()
    rows = wide.set_index(["step", "module"])
    for name in tuple_outputs:
        assert rows.loc[(0, name), "act_var"] > 0, name


def planted_gpt2(edit: Callable[[torch.Tensor], torch.Tensor]) -> nn.Module:
    model = hf_tiny.build("gpt2").eval()
    dict(model.named_modules())[FC].register_forward_hook(lambda m, a, out: edit(out))
    return model


def test_forward_nan_alarm_names_the_module_with_a_kwargs_only_call() -> None:
    model = planted_gpt2(overflow_to_nan)
    with pytest.raises(NonFiniteError) as caught, stability.watch(model, every=5):
        train(model, hf_tiny.gpt2_batch(), 1)
    a = caught.value.attribution
    assert (a.module, a.phase, a.op, a.mechanism) == (FC, "forward", "mul", "overflow"), a.line()
    assert caught.value.step == 0 and f"{FC} (forward)" in str(caught.value)


def test_backward_nan_alarm_fires_before_the_step_and_names_the_module() -> None:
    model = planted_gpt2(broken_backward)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteError) as caught, stability.watch(model, every=5):
        train(model, hf_tiny.gpt2_batch(), 1)
    a = caught.value.attribution
    assert (a.module, a.phase) == (FC, "backward"), a.line()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


@dataclass
class Out:
    hidden: torch.Tensor
    loss: torch.Tensor


class DataclassModel(nn.Module):
    """A plain dataclass out, keyword arguments in: neither a tensor nor a mapping."""

    def __init__(self, poison: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc, self.head = nn.Linear(8, 8), nn.Linear(8, 1)
        self.poison = poison

    def forward(self, *, x: torch.Tensor, y: torch.Tensor) -> Out:
        h = self.fc(x)
        if self.poison:
            h = h / (h * 0.0)  # 0 / 0 and x / 0: NaN and inf in the model's own code
        return Out(h, nn.functional.mse_loss(self.head(h), y))


def test_dataclass_outputs_are_read_and_alarmed() -> None:
    gen = torch.Generator().manual_seed(0)
    batch: dict[str, Any] = {"x": torch.randn(16, 8, generator=gen), "y": torch.randn(16, 1)}
    model = DataclassModel()
    with stability.watch(model, every=1) as w:
        train(model, batch, 2)
    assert w.step == 2 and w.to_frame(wide=True)["act_var"].map(math.isfinite).all()
    poisoned = DataclassModel(poison=True)
    with pytest.raises(NonFiniteError) as caught, stability.watch(poisoned):
        train(poisoned, batch, 1)
    a = caught.value.attribution
    assert (a.module, a.phase, a.op) == ("<model>", "forward", "div"), a.line()
