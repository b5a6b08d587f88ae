"""``stability.watch``: history every N steps, the tidy frame, the HTML page, the alarm.

Small networks (width 8-16), fixed seeds: each test runs in well under a second.
"""

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import stability
from stability.errors import StabilityError
from stability.integrations.watch import STATS, NonFiniteError, NonFiniteWarning, watch
from stability.train.attribution import ROOT


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = x + self.fc(self.norm(x))
        return y


def stack(width: int = 8, blocks: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[Block(width) for _ in range(blocks)], nn.Linear(width, 1))


def train(model: nn.Module, steps: int, x: torch.Tensor | None = None) -> list[float]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 8, generator=gen) if x is None else x
    y = torch.randn(16, 1, generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_history_every_n_steps_with_qualified_names() -> None:
    model = stack()
    with stability.watch(model, every=3) as w:
        train(model, 7)
    frame = w.to_frame()
    assert list(frame.columns) == ["step", "module", "stat", "value"]
    assert sorted(frame["step"].unique()) == [0, 3, 6]
    names = list(dict.fromkeys(frame["module"]))
    assert names == ["0", "0.norm", "0.fc", "1", "1.norm", "1.fc", "2"]  # containers left out
    assert list(dict.fromkeys(frame["stat"])) == list(STATS)
    wide = w.to_frame(wide=True)
    assert len(wide) == 3 * len(names)
    # LayerNorm resets scale: its output has variance ~1 (biased, per row), whatever came in.
    norms = wide[wide["module"].str.endswith("norm")]
    assert norms["act_var"].between(0.9, 1.01).all()
    assert (wide["grad_var"] > 0).all() and (wide["weight_grad_var"].dropna() > 0).all()
    assert (wide["nonfinite"] == 0).all()
    assert w.first is None and w.step == 7


def test_modules_carry_no_hooks_between_recorded_steps() -> None:
    model = stack()
    fc = model[0].fc
    with stability.watch(model, every=2) as w:
        train(model, 1)  # step 0 recorded
        assert len(fc._forward_hooks) == 0  # removed once the forward ended
        train(model, 1)  # step 1 not recorded
        assert len(w.history) == 7
    assert len(model._forward_hooks) == 0 and len(model._forward_pre_hooks) == 0


def test_calls_without_gradients_are_not_steps() -> None:
    model = stack()
    with stability.watch(model, every=1) as w:
        with torch.no_grad():
            model(torch.randn(4, 8))
        assert w.step == 0
        train(model, 2)
    assert w.step == 2


def test_watching_leaves_training_unchanged() -> None:
    plain = train(stack(), 5)
    model = stack()
    with stability.watch(model, every=2):
        watched = train(model, 5)
    assert watched == plain  # bit for bit: the hooks only read


def test_forward_overflow_names_module_phase_and_operator() -> None:
    model = stack(blocks=3)
    with torch.no_grad():
        model[1].fc.weight.fill_(3e38)  # finite weights whose products overflow float32
    with pytest.raises(NonFiniteError) as caught, stability.watch(model, every=5):
        train(model, 1)
    a = caught.value.attribution
    assert (a.module, a.phase, a.op, a.mechanism) == ("1.fc", "forward", "addmm", "overflow")
    assert caught.value.step == 0 and "1.fc (forward)" in str(caught.value)


class ZeroSqrt(nn.Module):
    """sqrt(0 * x): finite forward (0); backward 1 / (2 sqrt 0) = inf, then 0 * inf = NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x * 0.0) + x


def test_backward_nan_names_the_module_and_operator() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), ZeroSqrt(), nn.Linear(8, 1))
    with pytest.raises(NonFiniteError) as caught, stability.watch(model, every=5):
        train(model, 1)
    a = caught.value.attribution
    # The cause is the inf of 1 / (2 sqrt 0); the NaN (0 * inf) follows it, and is named too.
    assert (a.module, a.phase, a.kind) == ("1", "backward", "infinite")
    assert a.op is not None and "NaN follows" in a.detail
    assert all(torch.isfinite(p).all() for p in model.parameters())  # raised before the update


def test_weights_made_non_finite_by_an_update_are_named() -> None:
    model = stack()
    with torch.no_grad():
        model[0].norm.weight[0] = math.inf
    with pytest.raises(NonFiniteError) as caught, stability.watch(model):
        train(model, 1)
    a = caught.value.attribution
    assert (a.module, a.phase, a.kind) == ("0.norm", "update", "infinite")


def test_warn_mode_warns_once_and_keeps_training() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), ZeroSqrt(), nn.Linear(8, 1))
    with (
        pytest.warns(NonFiniteWarning, match="backward") as record,
        stability.watch(model, every=1, on_nonfinite="warn") as w,
    ):
        train(model, 3)
    assert len(record) == 1 and w.first is not None and w.first.step == 0
    assert w.nonfinite_steps >= 2 and w.step == 3


def test_replay_leaves_batchnorm_statistics_and_gradients_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), ZeroSqrt(), nn.Linear(8, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteWarning)
        with stability.watch(model, every=1, on_nonfinite="warn") as w:
            train(model, 1)
    assert w.first is not None and w.first.attribution.module == "2"
    # One forward of training, not two: running_mean moved by momentum 0.1 once.
    torch.manual_seed(0)
    fresh = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), ZeroSqrt(), nn.Linear(8, 1))
    train(fresh, 1)
    bn, bn_fresh = model[1], fresh[1]
    assert isinstance(bn, nn.BatchNorm1d) and isinstance(bn_fresh, nn.BatchNorm1d)
    assert torch.equal(bn.running_mean, bn_fresh.running_mean)  # type: ignore[arg-type]
    assert int(bn.num_batches_tracked) == 1  # type: ignore[arg-type]


def test_report_writes_one_self_contained_page(tmp_path: Path) -> None:
    model = stack()
    with stability.watch(model, every=2) as w:
        train(model, 4)
    page = w.report(tmp_path / "watch.html").read_text(encoding="utf-8")
    assert "All values finite over 4 steps" in page
    assert "0.fc" in page and "data:image/svg+xml;base64," in page
    assert "<script" not in page and "http" not in page.split("<body>")[1]


def test_root_label_when_the_model_itself_fails() -> None:
    class Divide(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.fc(x)
            return y / (y * 0.0)  # the model's own code: 0 / 0 = NaN where y = 0, inf elsewhere

    torch.manual_seed(0)
    model = Divide()
    with pytest.raises(NonFiniteError) as caught, stability.watch(model):
        model(torch.randn(4, 8)).sum().backward()
    assert caught.value.attribution.module == ROOT
    assert caught.value.attribution.op == "div"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 0}, "every must be an integer >= 1, got 0"),
        ({"on_nonfinite": "ignore"}, "unknown on_nonfinite 'ignore'; valid choices"),
        ({"modules": ["0.nope"]}, "unknown module '0.nope'; valid choices: ['0', '0.norm'"),
        ({"ranks": "all"}, "unknown ranks 'all'; valid choices: ['reduce', 'each']"),
        ({"log_to": 3}, "log_to must be a SummaryWriter or a log directory, got int"),
    ],
)
def test_bad_arguments_are_one_line(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(StabilityError) as caught:
        watch(stack(), **kwargs)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
