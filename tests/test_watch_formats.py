"""``watch(model, formats=..., recipe=...)``: the fp8 / MX figures across training steps.

The growth test is the point of the feature: a weight that grows step to step overflows
the delayed (amax-history) scale while dynamic per-tensor scaling never overflows; its
witness is the same loop without the growth, where the delayed scale keeps up.
"""

import itertools
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import stability
from stability.core.lowp.formats import get_format
from stability.core.lowp.recipes import get_recipe
from stability.errors import StabilityError
from stability.integrations.trainer_watch import TrainerWatch
from stability.integrations.watch_formats import FIGURES, fp8_tag
from stability.usermodel.lowp_probe import probe_formats

GROWTH = 1.5  # the last Linear's weight is multiplied by this after every step
STEPS = 5


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(32, 16, generator=gen), torch.randn(32, 8, generator=gen)


def train(growth: float, recipe: list[str], every: int = 1) -> pd.DataFrame:
    """STEPS steps of SGD on one fixed batch, the top weight scaled by ``growth`` after each."""
    model = mlp()
    x, y = batch()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    with stability.watch(model, every=every, formats=["e4m3"], recipe=recipe) as w:
        for _ in range(STEPS):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            with torch.no_grad():
                model[2].weight.mul_(growth)
    return w.formats_frame()


def series(frame: pd.DataFrame, recipe: str, tensor: str, figure: str) -> list[float]:
    """One figure of the top module's ``tensor`` across the recorded steps."""
    rows = frame[(frame["module"] == "2") & (frame["recipe"] == recipe)]
    return rows[rows["tensor"] == tensor].sort_values("step")[figure].tolist()


def test_growing_weight_overflows_delayed_scaling_not_dynamic() -> None:
    frame = train(GROWTH, ["tensor", "delayed:4"])
    assert sorted(set(frame["step"])) == list(range(STEPS))
    amax = series(frame, "tensor", "weight", "amax")
    # The weight grows by GROWTH per step; the SGD updates are far smaller than that.
    assert all(b > a * (1 + (GROWTH - 1) / 2) for a, b in itertools.pairwise(amax))
    for tensor in ("weight", "output"):
        delayed = series(frame, "delayed:4", tensor, "overflow_frac")
        assert delayed[0] == 0  # the first step scales by its own amax
        assert all(f > 0 for f in delayed[1:])  # a history behind a growing amax overflows
    assert (frame[frame["recipe"] == "tensor"]["overflow_frac"] == 0).all()


def test_witness_without_growth_delayed_scaling_keeps_up() -> None:
    frame = train(1.0, ["delayed:4"])
    for tensor in ("weight", "output"):
        assert series(frame, "delayed:4", tensor, "overflow_frac") == [0.0] * STEPS


def test_delayed_history_spans_recorded_steps_only() -> None:
    """every=2: the delayed history is pushed on recorded steps (0, 2, 4), so the scale at
    step 2 lags two steps of growth and overflows; nothing is recorded in between."""
    frame = train(GROWTH, ["delayed:4"], every=2)
    assert sorted(set(frame["step"])) == [0, 2, 4]
    delayed = series(frame, "delayed:4", "weight", "overflow_frac")
    assert delayed[0] == 0 and all(f > 0 for f in delayed[1:])


def test_a_step_equals_probe_formats_exactly() -> None:
    formats = ["e4m3", "mxfp8", "hybrid"]
    recipes = ["tensor", "delayed:4", "row"]
    x, y = batch()
    model = mlp()
    with stability.watch(model, every=1, formats=formats, recipe=recipes) as w:
        nn.functional.mse_loss(model(x), y).backward()
    watched = w.formats_frame()
    assert set(watched["step"]) == {0}
    rows = probe_formats(
        model, lambda: model(x), lambda out: nn.functional.mse_loss(out, y),
        [get_format(f) for f in formats], [get_recipe(r) for r in recipes],
    )  # fmt: skip
    assert set(watched["tensor"]) == {"input", "weight", "output", "grad"}
    pd.testing.assert_frame_equal(
        watched.drop(columns="step"), pd.DataFrame(rows), check_exact=True
    )


def test_tensorboard_fp8_tags_read_back(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = mlp()
    x, y = batch()
    with stability.watch(model, every=2, log_to=tmp_path, formats="e4m3") as w:
        for _ in range(3):
            nn.functional.mse_loss(model(x), y).backward()
    acc = EventAccumulator(str(tmp_path)).Reload()
    frame = w.formats_frame()
    fp8 = sorted(t for t in acc.Tags()["scalars"] if t.startswith("stability/fp8/"))
    expected = sorted({fp8_tag(r, f) for r in frame.to_dict("records") for f in FIGURES})
    assert fp8 == expected
    assert "stability/fp8/float8_e4m3fn/tensor/weight_amax/2" in fp8
    events = acc.Scalars("stability/fp8/float8_e4m3fn/tensor/output_sqnr_db/0")
    assert [e.step for e in events] == [0, 2]
    assert [e.value for e in events] == pytest.approx(series_of(frame), rel=1e-6)


def series_of(frame: pd.DataFrame) -> list[float]:
    rows = frame[(frame["module"] == "0") & (frame["tensor"] == "output")]
    return rows.sort_values("step")["sqnr_db"].tolist()


def hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"formats": ["e4m7"]}, ["'e4m7'", "float8_e4m3fn", "mxfp8"]),
        ({"formats": ["e4m3"], "recipe": "delayed:x"}, ["'delayed:x'", "tensor", "row"]),
        ({"formats": ["e4m3"], "recipe": ["tensor", "dynamic"]}, ["'dynamic'", "tensor"]),
        ({"formats": []}, ["formats needs at least one"]),
        ({"formats": ["e4m3"], "modules": ["1"]}, ["'1'", "matmul"]),
    ],
    ids=["bad-format", "bad-delayed", "bad-recipe-in-list", "no-format", "no-matmul-module"],
)
def test_bad_formats_fail_at_construction(kwargs: dict[str, object], says: list[str]) -> None:
    model = mlp()
    with pytest.raises(StabilityError) as err, stability.watch(model, **kwargs):  # type: ignore[arg-type]
        model(torch.randn(2, 16))
    message = str(err.value)
    assert "\n" not in message
    assert all(s in message for s in says), message
    assert hooks(model) == 0


def test_trainer_watch_logs_fp8_scalars_with_its_own() -> None:
    model = mlp()
    x, y = batch()
    w = TrainerWatch(model, 1, None, None, "reduce", ["act_var"], ["e4m3"], "delayed:2")
    with w:
        w.begin_update(0)
        nn.functional.mse_loss(model(x), y).backward()
        fresh = w.take_scalars()
    assert "stability/act_var/2" in fresh
    tag = "stability/fp8/float8_e4m3fn/delayed:2/grad_underflow_frac/2"
    frame = w.formats_frame()
    row = frame[(frame["module"] == "2") & (frame["tensor"] == "grad")]
    assert fresh[tag] == float(row["underflow_frac"].iloc[0])


def test_report_shows_amax_across_steps(tmp_path: Path) -> None:
    model = mlp()
    x, y = batch()
    with stability.watch(model, every=1, formats=["e4m3"], recipe="delayed:2") as w:
        for _ in range(2):
            nn.functional.mse_loss(model(x), y).backward()
            with torch.no_grad():
                model[2].weight.mul_(GROWTH)
    page = w.report(tmp_path / "watch.html").read_text(encoding="utf-8")
    assert "log2 amax" in page and "figures at the last recorded step" in page
    assert "first recorded step with an overflow" in page


def test_without_formats_nothing_changes(tmp_path: Path) -> None:
    model = mlp()
    x, y = batch()
    with stability.watch(model, every=1) as w:
        nn.functional.mse_loss(model(x), y).backward()
    assert w.formats is None and w.formats_frame().empty
    page = w.report(tmp_path / "watch.html").read_text(encoding="utf-8")
    assert "log2 amax" not in page


def test_docs_example_prints_what_the_docs_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/low-precision.md's "Watching fp8 figures while training": its code, run as a
    user copies it, prints the output the page shows."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "low-precision.md").read_text()
    section = doc.split("## Watching fp8 figures while training")[1].split("\n## ")[0]
    code = section.split("```python\n")[1].split("```")[0]
    shown = section.split("```text\n")[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "low-precision.md", "exec"), {})
    printed = capsys.readouterr().out
    assert [s.rstrip() for s in printed.splitlines()] == [s.rstrip() for s in shown.splitlines()]
    assert (tmp_path / "watch.html").exists()
