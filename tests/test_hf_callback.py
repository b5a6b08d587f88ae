"""``stability.integrations.hf.StabilityCallback`` inside the real Hugging Face ``Trainer``.

A tiny GPT-2 (``examples/hf_tiny.py``) trains a few steps on CPU with a planted overflow: a
forward hook multiplies one module's output by inf (or a tensor hook one gradient) at a
known optimizer step. The callback must name that step, module, phase and operator, and the
weights after training must equal the weights before the bad step: its update never applied.
"""

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import Trainer, TrainerCallback, TrainingArguments
from wandb_offline import offline_wandb

from examples import hf_tiny
from stability.errors import StabilityError
from stability.integrations.hf import StabilityCallback
from stability.integrations.watch import NonFiniteError, NonFiniteWarning

PLANTED = "transformer.h.1.mlp.c_fc"
BAD_STEP = 3


class Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """32 fixed rows of 12 token ids: a causal-LM batch per row (labels = ids)."""

    def __len__(self) -> int:
        return 32

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, hf_tiny.VOCAB, (12,), generator=torch.Generator().manual_seed(i))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


class Plant(TrainerCallback):  # type: ignore[misc]
    """Knows the optimizer step; snapshots the weights as the bad step begins."""

    def __init__(self, model: torch.nn.Module, at: int) -> None:
        self.model, self.at, self.step = model, at, -1
        self.before: dict[str, torch.Tensor] = {}

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.step = state.global_step
        if self.step == self.at:
            self.before = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def unchanged(self) -> bool:
        after = self.model.state_dict()
        return bool(self.before) and all(torch.equal(v, after[k]) for k, v in self.before.items())


def run(
    tmp_path: Path, callback: StabilityCallback, phase: str = "forward", steps: int = 6,
    **args: Any,
) -> tuple[Trainer, Plant]:  # fmt: skip
    model = hf_tiny.build("gpt2")
    plant = Plant(model, BAD_STEP)
    module = model.get_submodule(PLANTED)

    def forward(m: torch.nn.Module, a: Any, out: torch.Tensor) -> torch.Tensor | None:
        if plant.step != BAD_STEP:
            return None
        if phase == "forward":
            return out * float("inf")
        if out.requires_grad:
            out.register_hook(lambda g: g * float("inf"))
        return None

    module.register_forward_hook(forward)
    options = dict(output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=2,
                   report_to="none", use_cpu=True, logging_steps=2, save_strategy="no",
                   disable_tqdm=False, seed=0, dataloader_num_workers=0)  # fmt: skip
    options.update(args)
    trainer = Trainer(
        model=model, args=TrainingArguments(**options), train_dataset=Tokens(), callbacks=[plant]
    )
    callback.attach(trainer)
    return trainer, plant


def test_forward_overflow_is_named_and_its_step_never_applied(tmp_path: Path) -> None:
    cb = StabilityCallback(every=2)
    trainer, plant = run(tmp_path, cb)
    with pytest.warns(NonFiniteWarning, match=f"step {BAD_STEP}: {PLANTED} \\(forward\\)"):
        trainer.train()
    assert cb.watch is not None and cb.watch.first is not None
    found = cb.watch.first
    assert (found.step, found.attribution.module, found.attribution.phase) == (
        BAD_STEP, PLANTED, "forward",
    )  # fmt: skip
    assert found.attribution.op == "mul"  # the planted hook's multiplication
    assert cb.skipped == [BAD_STEP] and trainer.state.global_step == BAD_STEP + 1  # stopped
    assert plant.unchanged()  # the bad step's update was not applied
    assert sorted(cb.watch.to_frame(wide=True)["step"].unique()) == [0, 2]
    assert cb.report_path == tmp_path / "stability-watch.html" and cb.report_path.exists()
    logged = [k for row in trainer.state.log_history for k in row if k.startswith("stability/")]
    assert f"stability/act_var/{PLANTED}" in logged


def test_raise_under_bf16_and_gradient_accumulation(tmp_path: Path) -> None:
    cb = StabilityCallback(every=1, on_nonfinite="raise")
    trainer, plant = run(tmp_path, cb, bf16=True, gradient_accumulation_steps=2)
    with pytest.raises(NonFiniteError, match=f"step {BAD_STEP}: {PLANTED} \\(forward\\)"):
        trainer.train()
    assert plant.unchanged()
    assert cb.report_path is not None and cb.report_path.exists()  # written before raising
    # One row per module per optimizer step (the first micro-batch of each).
    frame = cb.watch.to_frame(wide=True) if cb.watch is not None else None
    assert frame is not None and sorted(frame["step"].unique()) == [0, 1, 2, 3]
    assert trainer.accelerator.mixed_precision == "bf16"  # CPU autocast, replay included


def test_backward_overflow_warn_skips_the_step_and_trains_on(tmp_path: Path) -> None:
    cb = StabilityCallback(every=3, on_nonfinite="warn")
    trainer, _ = run(tmp_path, cb, phase="backward", steps=5)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer.train()
    messages = [str(w.message) for w in seen if issubclass(w.category, NonFiniteWarning)]
    assert len(messages) == 1 and "training goes on" in messages[0]
    assert cb.watch is not None and cb.watch.first is not None
    found = cb.watch.first.attribution
    assert (cb.watch.first.step, found.phase) == (BAD_STEP, "backward")
    # The hook on c_fc's output gradient runs inside the backward of its consumer, the GELU:
    # the gradient arriving at c_fc is made there (and its operator named).
    assert (found.module, found.op) == ("transformer.h.1.mlp.act", "mul"), found.line()
    assert cb.skipped == [BAD_STEP] and trainer.state.global_step == 5  # trained on
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_scalars_reach_the_trainers_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cb = StabilityCallback(every=2)
    trainer, _ = run(tmp_path, cb, steps=3, report_to="tensorboard")
    trainer.train()
    (logdir,) = {p.parent for p in tmp_path.rglob("events.out.tfevents.*")}
    tags = EventAccumulator(str(logdir)).Reload().Tags()["scalars"]
    assert "train/stability/act_var/lm_head" in tags
    assert f"train/stability/grad_var/{PLANTED}" in tags and "train/loss" in tags


def test_formats_pass_through_to_the_watch_and_the_logs(tmp_path: Path) -> None:
    cb = StabilityCallback(every=2, formats=["e4m3"], recipe="delayed:4", report=None)
    trainer, _ = run(tmp_path, cb, steps=3)  # the plant (step 3) never comes
    trainer.train()
    assert cb.watch is not None
    frame = cb.watch.formats_frame()
    assert sorted(frame["step"].unique()) == [0, 2]
    assert PLANTED in set(frame["module"])  # a Conv1D: a matmul module
    tag = f"stability/fp8/float8_e4m3fn/delayed:4/output_amax/{PLANTED}"
    assert any(tag in row for row in trainer.state.log_history)


def test_a_bad_format_fails_when_the_callback_is_made() -> None:
    with pytest.raises(StabilityError, match=r"unknown .*'e4m7'.*float8_e4m3fn"):
        StabilityCallback(formats=["e4m7"])


def same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)  # NaN (a module without weights) is logged as NaN


def test_scalars_reach_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wandb = offline_wandb(monkeypatch, tmp_path)
    from wandb_records import history

    cb = StabilityCallback(every=1, report=None)
    trainer, _ = run(tmp_path / "out", cb, steps=3, report_to=["wandb"])  # before the plant
    try:
        trainer.train()
    finally:
        wandb.finish()
    (log,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    rows = {
        int(r["train/global_step"]): r for r in history(log).values() if "train/global_step" in r
    }
    expected = {
        row["step"]: {k: v for k, v in row.items() if k.startswith("stability/")}
        for row in trainer.state.log_history
    }
    expected = {step: tags for step, tags in expected.items() if tags}
    # Two log events carry scalars: logging_steps=2, and the end of training.
    assert sorted(expected) == [2, 3] and sorted(rows) == [2, 3]
    for step, tags in expected.items():
        got = {k.removeprefix("train/"): v for k, v in rows[step].items()}
        got = {k: v for k, v in got.items() if k.startswith("stability/")}
        assert set(got) == set(tags) and f"stability/act_var/{PLANTED}" in got
        assert all(same(got[k], v) for k, v in tags.items()), step
