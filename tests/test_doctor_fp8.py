"""``stability doctor --dtype float8`` and the fp8 training emulation under it.

Planted: a model whose output is scaled by 1e-6 has the gradient at its output layer flushed
in E5M2 under recipe ``none`` (the doctor names that module at step 0); under ``tensor`` the
same run flushes nothing (the witness: the check is able to pass). A tiny GPT-2 trains under
float8 and the verdict names a module or says none did. Bad names: one line, exit 2.
"""

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from doctor_run import assert_refused, at_repo_root, doctor  # noqa: F401 (at_repo_root: autouse, applies here)
from torch import nn

from stability.core.lowp.training import Fp8Training
from stability.core.lowp.training_events import first_gradient_event
from stability.results.store import Store

TINY = ["--depth", "2", "--width", "8", "--batch", "8", "--steps", "3"]
PLANT = ["--model", "tests.fp8_plant:build", "--model-args", '{"width": 16, "out_scale": 1e-6}',
         "--input", "16x16:float32", "--loss", "mse", "--steps", "2"]  # fmt: skip
GPT2 = ["--model", "examples.hf_tiny:build", "--model-args", '{"arch": "gpt2"}',
        "--input", "examples.hf_tiny:gpt2_batch", "--steps", "2"]  # fmt: skip


def _sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))


def _train_rows(model: nn.Module, recipe: str, loss_factor: float) -> list[dict[str, Any]]:
    x = torch.randn(8, 8, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Fp8Training(model, "hybrid", recipe) as emu:
        for _ in range(2):
            opt.zero_grad()
            (model(x).square().mean() * loss_factor).backward()
            opt.step()
    return emu.rows()


def test_tiny_loss_flushes_the_last_layer_under_none_not_under_tensor() -> None:
    event = first_gradient_event(_train_rows(_sequential(), "none", 1e-6))
    assert event is not None
    assert (event.kind, event.step, event.module, event.phase) == ("underflow", 0, "2", "backward")
    assert event.fraction == 1.0  # every value of 1e-6 * O(1/32) is below 2^-16
    assert first_gradient_event(_train_rows(_sequential(), "tensor", 1e-6)) is None


def _sigmoid_stack(depth: int) -> nn.Sequential:
    """The notes' vanishing gradient: sigmoid under Xavier shrinks it ~4x per layer."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(depth):
        lin = nn.Linear(8 if i == 0 else 32, 32)  # _train_rows feeds 8 features
        nn.init.xavier_normal_(lin.weight)
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(32, 1))


def test_a_gradient_flush_is_named_where_the_backward_first_meets_it() -> None:
    # Under recipe none the vanishing gradient flushes in E5M2 from some layer down, and the
    # layers below it receive an all-zero gradient and so flush nothing themselves: the
    # event is the flushing layer nearest the loss, and the dead ones are seen as zero.
    rows = [r for r in _train_rows(_sigmoid_stack(10), "none", 1.0) if r["step"] == 0]
    event = first_gradient_event(rows)
    grads = {r["module"]: r for r in rows if r["tensor"] == "grad"}
    over = [r for r in grads.values() if r["flush_frac"] > 0.01]
    # all zero on arrival: nothing left to flush
    dead = [r for r in grads.values() if r["zero_frac"] == 1.0 and r["flush_frac"] == 0.0]
    assert event is not None and event.kind == "underflow" and len(over) > 1  # order matters
    assert event.module == max(over, key=lambda r: r["order"])["module"]
    assert dead  # forward order would pass over them, seeing no flush
    assert max(r["order"] for r in dead) < grads[event.module]["order"]


@pytest.mark.parametrize("recipe", ["row", "delayed:2"])
def test_every_recipe_trains_and_records_each_step(recipe: str) -> None:
    rows = _train_rows(_sequential(), recipe, 1.0)
    got = {(r["step"], r["module"], r["tensor"]) for r in rows}
    assert got == {(s, m, t) for s in (0, 1) for m in ("0", "2")
                   for t in ("input", "weight", "output", "grad")}  # fmt: skip
    assert all(r["recipe"] == recipe for r in rows)


def test_removal_leaves_the_model_as_it_was() -> None:
    model = _sequential()
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    before = model(x)
    with Fp8Training(model, "hybrid", "tensor"):
        assert not torch.equal(model(x), before)  # E4M3 operands change the output
    assert torch.equal(model(x), before)
    for m in model.modules():
        assert "forward" not in vars(m) and not m._forward_pre_hooks


def test_doctor_mlp_float8_names_or_clears_and_writes_the_fp8_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = doctor(tmp_path, capsys, *TINY, "--dtype", "hybrid", "--recipe", "row")
    assert code == 0 and "fp8_event" in doc
    table = pd.DataFrame(doc["tables"]["fp8"])
    assert set(table["module"]) == {"body.blocks.0.linear", "body.blocks.1.linear", "head.linear"}
    assert set(table["step"]) == {0, 1, 2} and set(table["recipe"]) == {"row"}
    assert (tmp_path / "doctor-fp8.csv").exists()
    assert not Store.open(tmp_path / "s.db").doctor_rows("fp8").empty


def test_e5m2_overflow_is_named_and_the_doctor_replays_through_fp8_casts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """N(0, 1) weights grow the gradient past E5M2's 57344 with no scale: inf, then NaN."""
    args = ["--recipe", "none", "--init", "standard_normal", "--depth", "4", "--width", "16",
            "--lr", "0.1", "--steps", "5", "--dtype", "float8"]  # fmt: skip
    _, doc = doctor(tmp_path, capsys, *args)
    e = doc["fp8_event"]
    assert (e["kind"], e["phase"], e["element"]) == ("overflow", "backward", "e5m2")
    d = doc["diagnosis"]
    assert d["status"] == "diverged" and d["step"] >= e["step"]
    assert "float8_e5m2" in d["first_inf"]  # the replay names the cast that made the inf


def test_doctor_model_names_the_planted_module_under_none_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, doc = doctor(tmp_path, capsys, *PLANT, "--dtype", "float8", "--recipe", "none")
    e = doc["fp8_event"]
    assert (e["kind"], e["step"], e["module"], e["phase"], e["tensor"]) == (
        "underflow", 0, "out", "backward", "grad"
    )  # fmt: skip
    assert e["fraction"] > e["flush_threshold"]
    _, doc = doctor(tmp_path / "t", capsys, *PLANT, "--dtype", "float8")  # recipe tensor
    assert doc["fp8_event"] is None


def test_tiny_gpt2_trains_in_float8_and_names_a_module_or_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("transformers")
    code, doc = doctor(tmp_path, capsys, *GPT2, "--dtype", "fp8")
    assert code == 0
    table = pd.read_csv(tmp_path / "doctor-fp8.csv")
    assert {"transformer.h.0.attn.c_attn", "lm_head"} <= set(table["module"])
    assert set(table["kind"]) == {"Conv1D", "Linear"}
    e = doc["fp8_event"]
    assert e is None or e["module"] in set(table["module"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([*TINY, "--dtype", "float9"], "'float8'"),
        ([*TINY, "--dtype", "float8", "--recipe", "bogus"], "'tensor'"),
        ([*TINY, "--recipe", "none"], "--recipe works with --dtype float8 only"),
        ([*TINY, "--dtype", "float8", "--lr-search"], "--lr-search does not run under"),
        ([*TINY, "--dtype", "float8", "--loss-scaling"], "--loss-scaling needs a reduced"),
        ([*TINY, "--dtype", "float8", "--flush-threshold", "2"], "--flush-threshold"),
        ([*PLANT, "--dtype", "float9"], "'float8'"),
        ([*PLANT, "--dtype", "float8", "--recipe", "delayed:0"], "'delayed:H'"),
    ],
    ids=[
        "dtype",
        "recipe",
        "recipe-without-float8",
        "lr-search",
        "loss-scaling",
        "threshold",
        "model-dtype",
        "model-recipe",
    ],
)
def test_bad_fp8_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert_refused(tmp_path, capsys, args, message)
