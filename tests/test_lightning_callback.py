"""``stability.integrations.lightning.StabilityCallback`` inside a real Lightning ``Trainer``.

A tiny LightningModule (two Linear layers and a GELU, MSE loss, SGD) trains a few steps on
CPU; a forward hook multiplies one layer's output by inf at a known optimizer step. The
callback must name that step and module and the operator, and the weights after ``fit``
must equal the weights before the bad step.
"""

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("pytorch_lightning")

import pytorch_lightning as pl
from wandb_offline import offline_wandb

from stability.errors import StabilityError
from stability.integrations.lightning import StabilityCallback
from stability.integrations.scalars import LOGGED
from stability.integrations.watch import NonFiniteError, NonFiniteWarning

BAD_STEP = 3
PLANTED = "net.0"  # the first Linear layer


class Tiny(pl.LightningModule):  # type: ignore[misc]
    """Linear(8, 16) -> GELU -> Linear(16, 1) on fixed random data."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 1))
        self.plant_at = -1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out

    def training_step(self, batch: Any, idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> torch.utils.data.DataLoader[Any]:
        gen = torch.Generator().manual_seed(0)
        data = torch.utils.data.TensorDataset(
            torch.randn(64, 8, generator=gen), torch.randn(64, 1, generator=gen)
        )
        return torch.utils.data.DataLoader(data, batch_size=4)


class Snapshot(pl.Callback):  # type: ignore[misc]
    """The weights as the bad step begins (before any of its micro-batches)."""

    def __init__(self) -> None:
        self.before: dict[str, torch.Tensor] = {}

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, idx: int) -> None:
        module.plant_at = BAD_STEP
        if trainer.global_step == BAD_STEP and not self.before:
            self.before = {k: v.detach().clone() for k, v in module.state_dict().items()}


def fit(
    tmp_path: Path, cb: StabilityCallback, logger: Any = False, steps: int = 6, **kw: Any
) -> tuple[Any, Tiny, Snapshot]:
    module, snap = Tiny(), Snapshot()
    trainer = pl.Trainer(
        max_steps=steps, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1, callbacks=[snap, cb],
        default_root_dir=str(tmp_path), **kw,
    )  # fmt: skip

    def plant(m: nn.Module, a: Any, out: torch.Tensor) -> torch.Tensor | None:
        return out * float("inf") if trainer.global_step == BAD_STEP else None

    module.net[0].register_forward_hook(plant)
    return trainer, module, snap


def unchanged(module: Tiny, snap: Snapshot) -> bool:
    after = module.state_dict()
    return bool(snap.before) and all(torch.equal(v, after[k]) for k, v in snap.before.items())


pytestmark = [  # Lightning's advice (num_workers, ...) and torch's pytree deprecations
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


def test_planted_overflow_stops_fit_before_the_update(tmp_path: Path) -> None:
    cb = StabilityCallback(every=2)
    trainer, module, snap = fit(tmp_path, cb)
    with pytest.warns(NonFiniteWarning, match=f"step {BAD_STEP}: {PLANTED} \\(forward\\)"):
        trainer.fit(module)
    assert cb.watch is not None and cb.watch.first is not None
    found = cb.watch.first
    assert (found.step, found.attribution.module, found.attribution.op) == (
        BAD_STEP, PLANTED, "mul",
    )  # fmt: skip
    assert cb.skipped == [BAD_STEP] and trainer.global_step <= BAD_STEP + 1
    assert unchanged(module, snap)
    assert sorted(cb.watch.to_frame(wide=True)["step"].unique()) == [0, 2]
    assert cb.report_path is not None and cb.report_path.exists()


def test_raise_with_accumulation_and_tensorboard_logger(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cb = StabilityCallback(every=1, on_nonfinite="raise")
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer, module, snap = fit(tmp_path, cb, logger=logger, accumulate_grad_batches=2)
    with pytest.raises(NonFiniteError, match=f"step {BAD_STEP}: {PLANTED}"):
        trainer.fit(module)
    assert unchanged(module, snap)
    logger.experiment.flush()
    (logdir,) = {p.parent for p in tmp_path.rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(logdir)).Reload()
    assert "stability/act_var/net.0" in acc.Tags()["scalars"]
    # Logged at every optimizer step up to the bad one (its first micro-batch recorded).
    assert [e.step for e in acc.Scalars("stability/grad_var/net.2")] == [0, 1, 2, 3]


def test_warn_trains_on_with_finite_weights(tmp_path: Path) -> None:
    cb = StabilityCallback(every=5, on_nonfinite="warn")
    trainer, module, _ = fit(tmp_path, cb)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer.fit(module)
    assert sum(issubclass(w.category, NonFiniteWarning) for w in seen) == 1
    assert cb.skipped == [BAD_STEP] and trainer.global_step == 6
    assert all(torch.isfinite(p).all() for p in module.parameters())


class CompiledInside(Tiny):
    """The Lightning idiom for compiling: the network inside the module, compiled."""

    def __init__(self) -> None:
        super().__init__()
        self.fast = torch.compile(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fast(x)
        return out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's own imports
def test_compiled_network_inside_the_module(tmp_path: Path) -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    cb = StabilityCallback(every=2, target="fast")
    module, snap = CompiledInside(), Snapshot()
    trainer = pl.Trainer(
        max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1, callbacks=[snap, cb],
        default_root_dir=str(tmp_path),
    )  # fmt: skip
    bad = [False]  # read inside the graph: flipped twice, so compiled three times at most

    class Flag(pl.Callback):  # type: ignore[misc]
        def on_train_batch_start(self, trainer: Any, m: Any, batch: Any, idx: int) -> None:
            bad[0] = trainer.global_step == BAD_STEP

    trainer.callbacks.insert(0, Flag())
    module.net[0].register_forward_hook(lambda m, a, out: out * float("inf") if bad[0] else None)
    with pytest.warns(NonFiniteWarning, match=f"step {BAD_STEP}: 0 \\(forward\\)"):
        trainer.fit(module)  # step 3 does not record: it ran the compiled graph
    assert counters["stats"]["unique_graphs"] >= 1
    assert cb.skipped == [BAD_STEP] and unchanged(module, snap)
    assert cb.watch is not None and sorted(cb.watch.to_frame(wide=True)["step"].unique()) == [0, 2]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_compiled_lightning_module_is_trained_uncompiled_with_one_warning(tmp_path: Path) -> None:
    cb = StabilityCallback(every=2)
    trainer, module, snap = fit(tmp_path, cb)
    with (
        pytest.warns(UserWarning, match="one graph that hooks cannot see into"),
        pytest.warns(NonFiniteWarning, match=f"step {BAD_STEP}: {PLANTED}"),
    ):
        trainer.fit(torch.compile(module))
    assert cb.skipped == [BAD_STEP] and unchanged(module, snap)


def test_gradscaler_overflows_are_left_to_the_scaler(tmp_path: Path) -> None:
    """float16 under a GradScaler (CPU here): scaled gradients overflow until the scale has
    backed off (2^24 -> 2^15); those steps are the scaler's to skip, not alarms."""
    from pytorch_lightning.plugins.precision import MixedPrecision

    cb = StabilityCallback(every=2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24)
    trainer = pl.Trainer(
        max_steps=12, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1, callbacks=[cb],
        default_root_dir=str(tmp_path), plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)],
    )  # fmt: skip
    trainer.fit(Tiny())
    assert cb.watch is not None and cb.watch.scaler_skips > 0 and scaler.get_scale() < 2.0**24
    assert cb.skipped == [] and cb.watch.first is None and trainer.global_step == 12


def test_formats_pass_through_to_the_watch(tmp_path: Path) -> None:
    cb = StabilityCallback(every=2, formats=["e4m3", "mxfp8"], report=None)
    trainer = pl.Trainer(
        max_steps=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1, callbacks=[cb],
        default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(Tiny())
    assert cb.watch is not None
    frame = cb.watch.formats_frame()
    assert sorted(frame["step"].unique()) == [0, 2, 4]
    assert set(frame["module"]) == {"net.0", "net.2"}
    assert set(frame["format"]) == {"float8_e4m3fn", "mxfp8_e4m3"}


def test_a_bad_recipe_fails_when_the_callback_is_made() -> None:
    with pytest.raises(StabilityError, match="unknown scaling recipe 'delayed:0'"):
        StabilityCallback(formats=["e4m3"], recipe="delayed:0")


def test_scalars_reach_a_wandb_logger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wandb = offline_wandb(monkeypatch, tmp_path)
    from pytorch_lightning.loggers import WandbLogger
    from wandb_records import history

    cb = StabilityCallback(every=1, report=None)
    logger = WandbLogger(project="stability-test", save_dir=str(tmp_path), offline=True)
    trainer, module, _ = fit(tmp_path, cb, logger=logger, steps=BAD_STEP)  # before the plant
    try:
        trainer.fit(module)
    finally:
        wandb.finish()
    (log,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    rows = {int(r["trainer/global_step"]): r for r in history(log).values()}
    frame = cb.watch.to_frame() if cb.watch is not None else None
    assert frame is not None and sorted(rows) == [0, 1, 2]  # every optimizer step recorded
    for step, tags in frame.groupby("step"):
        got = {k: v for k, v in rows[int(step)].items() if k.startswith("stability/")}
        want = {
            f"stability/{s}/{m}": v
            for s, m, v in zip(tags["stat"], tags["module"], tags["value"], strict=True)
            if s in LOGGED
        }
        assert set(got) == set(want) and "stability/grad_var/net.2" in got
        assert all(got[k] == v or (v != v and got[k] != got[k]) for k, v in want.items())
