"""``watch`` beyond the plain loop: TensorBoard scalars read back with tensorboard's own
reader, and a ``torch.compile``d model (recording steps run eagerly, the attribution is a
replay on the original module)."""

from pathlib import Path

import pytest
import torch
from torch import nn

import stability
from stability.errors import StabilityError
from stability.integrations.watch import NonFiniteError, NonFiniteWarning


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


@pytest.mark.parametrize(
    ("integration", "kwargs", "message"),
    [
        ("hf", {"on_nonfinite": "ignore"}, "unknown on_nonfinite 'ignore'; valid choices: ['stop'"),
        ("hf", {"stats": ["act_vra"]}, "unknown stat 'act_vra'; valid choices: ['act_mean'"),
        ("lightning", {"on_nonfinite": "x"}, "unknown on_nonfinite 'x'; valid choices: ['stop'"),
        ("lightning", {"stats": "var"}, "unknown stat 'var'; valid choices: ['act_mean'"),
    ],
)
def test_callback_arguments_are_checked_at_once(
    integration: str, kwargs: dict[str, object], message: str
) -> None:
    module = pytest.importorskip(f"stability.integrations.{integration}")
    with pytest.raises(StabilityError) as caught:
        module.StabilityCallback(**kwargs)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def bad_input_loop(model: nn.Module, params: nn.Module, steps: int, bad_at: int) -> None:
    """SGD on fixed random batches; at ``bad_at`` one input entry is inf."""
    opt = torch.optim.SGD(params.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        x = torch.randn(4, 8, generator=gen)
        if step == bad_at:
            x[0, 0] = float("inf")
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's own imports (torch.jit)
def test_compiled_model_records_eagerly_and_attributes_by_replay() -> None:
    pytest.importorskip("torch._dynamo")
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager, base = mlp(), mlp()
    compiled = torch.compile(base)
    with (
        stability.watch(eager, every=2, on_nonfinite="warn") as reference,
        pytest.warns(NonFiniteWarning),
    ):
        bad_input_loop(eager, eager, 4, bad_at=3)
    with pytest.raises(NonFiniteError) as caught, stability.watch(compiled, every=2) as w:
        bad_input_loop(compiled, base, 4, bad_at=3)  # step 3 runs the compiled graph
    assert counters["stats"]["unique_graphs"] >= 1  # the graph really ran in between
    assert caught.value.step == 3
    assert caught.value.attribution == reference.first.attribution  # type: ignore[union-attr]
    assert caught.value.attribution.module == "0"
    # Recording steps ran the eager module: the same statistics as the eager model's watch.
    got, want = w.to_frame(), reference.to_frame()
    assert got[["step", "module", "stat"]].equals(want[["step", "module", "stat"]])
    assert got["value"].tolist() == pytest.approx(want["value"].tolist(), rel=1e-5, nan_ok=True)
