"""``watch`` beyond the plain loop: TensorBoard scalars read back with tensorboard's own
reader, and a ``torch.compile``d model (recording steps run eagerly, the attribution is a
replay on the original module)."""

from pathlib import Path

import pytest
import torch
from torch import nn

import stability
from stability.errors import StabilityError
from stability.integrations.watch import NonFiniteError


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))


def train(model: nn.Module, steps: int, bad_at: int | None = None) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        x = torch.randn(4, 8, generator=gen)
        if step == bad_at:
            x[0, 0] = 1e39  # float32 inf: the input itself
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


def test_tensorboard_tags_read_back(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = mlp()
    with stability.watch(model, every=2, log_to=tmp_path) as w:
        train(model, 5)
    acc = EventAccumulator(str(tmp_path)).Reload()
    tags = sorted(acc.Tags()["scalars"])
    stats = ["act_max_abs", "act_var", "grad_var", "nonfinite", "weight_grad_var"]
    assert [n for n, _ in w.named] == ["0", "2"]  # the Linear layers (default modules)
    assert tags == [f"stability/{s}/{m}" for s in stats for m in ("0", "2")]
    events = acc.Scalars("stability/act_var/2")
    assert [e.step for e in events] == [0, 2, 4]
    frame = w.to_frame(wide=True)
    expected = frame[frame["module"] == "2"]["act_var"].tolist()
    assert [e.value for e in events] == pytest.approx(expected, rel=1e-6)


def test_a_users_summary_writer_is_left_open(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    model = mlp()
    with stability.watch(model, every=1, log_to=writer):
        train(model, 1)
    writer.add_scalar("mine", 1.0, 0)  # still open
    writer.close()


def test_log_to_must_be_a_writer_or_a_directory() -> None:
    with pytest.raises(StabilityError, match="log_to must be a SummaryWriter or a log directory"):
        stability.watch(mlp(), log_to=3)
