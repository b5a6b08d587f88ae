"""float16 training: one deep network in float32, pure float16, and AMP with loss scaling.

The notes: vanishing gradients "become 0, especially in 16-bit floats". The same network
(``CONFIG``: sigmoid with Xavier, its gradients shrinking layer by layer on the way down) is
trained by the project's trainer in three ways:

- ``float32``: the reference;
- ``pure float16``: weights, activations and gradients all held in float16, so the update
  is rounded to float16 too (on CPU emulated: the trainer rounds every layer boundary and
  every gradient, and here the weights after each step; on CUDA the model itself is half);
- ``AMP + loss scaling``: float32 master weights, float16 compute, the loss scaled by
  GradScaler's rule (``train.scaler``: the emulated ``LossScaler`` on CPU, ``GradScaler``
  with autocast on CUDA).

``AMP, no scaling`` is the witnesses' known-bad variant. Every ``EVERY`` steps the rows
hold the loss and, per layer, the fraction of weight-gradient entries that are exactly zero
once stored in the run's dtype (``trainer.flush_fraction``, as ``train.loss_scaling``
measures it).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from stability.core.config import MLPConfig
from stability.core.emulation import round_to
from stability.experiments.common import Claim, needed
from stability.train.trainer import TrainConfig, Trainer

NAME = "float16"


@dataclass(frozen=True)
class Mode:
    """One way to train: the dtype, whether the loss is scaled, whether weights are half."""

    label: str
    dtype: str
    loss_scaling: bool
    pure: bool


MODES: dict[str, Mode] = {
    m.label: m
    for m in (
        Mode("float32", "float32", False, False),
        Mode("pure float16", "float16", False, True),
        Mode("AMP + loss scaling", "float16", True, False),
        Mode("AMP, no scaling", "float16", False, False),  # the known-bad variant
    )
}
SHOWN = ("float32", "pure float16", "AMP + loss scaling")
DEPTH, WIDTH = 10, 64
ACTIVATION, INIT = "sigmoid", "xavier_normal"
LR = 0.1
STEPS = {True: 100, False: 600}
EVERY = 10


def trainer_for(mode: Mode, seed: int, steps: int, device: str = "cpu") -> Trainer:
    """The trainer of one run; for pure float16 on CUDA, its model made half for good."""
    model = MLPConfig(DEPTH, WIDTH, ACTIVATION, INIT, mode.dtype, True, seed, device)
    cfg = TrainConfig(model, lr=LR, steps=steps, data="teacher", loss_scaling=mode.loss_scaling)
    trainer = Trainer(cfg)
    trainer.track_grad_flush = True
    if mode.pure and trainer.autocast:  # native: no float32 masters, no autocast
        trainer.model.half()
        trainer.autocast = False
        trainer.x = trainer.x.half()
        trainer.y = trainer.y.half() if trainer.y.is_floating_point() else trainer.y
        trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=LR)
    return trainer


def train_mode(mode: Mode, seed: int, steps: int, device: str = "cpu") -> list[dict[str, object]]:
    """One run's rows: every ``EVERY`` steps, the loss and each layer's zero fraction."""
    trainer = trainer_for(mode, seed, steps, device)
    names = [n for n, _ in trainer.model.named_parameters() if n.endswith("weight")]
    precision = "emulated" if trainer.mode == "emulated" else "native"
    rows: list[dict[str, object]] = []
    for step in range(steps):
        loss = float(trainer.compute(step))
        if step % EVERY == 0 or step == steps - 1:
            for layer, name in enumerate(names, start=1):
                zero = float(trainer.grad_flush[name][1])
                rows.append({"mode": mode.label, "seed": seed, "step": step, "layer": layer,
                             "is_head": layer == len(names), "loss": loss,
                             "zero_frac": zero, "precision_mode": precision,
                             "scale": trainer.scaler.get_scale()})  # fmt: skip
        trainer.apply()
        if mode.pure and trainer.mode == "emulated":  # the weights themselves are float16
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.copy_(round_to(p, torch.float16))
    return rows


def run(seeds: Sequence[int], quick: bool, device: str = "cpu",
        modes: Sequence[str] = SHOWN) -> pd.DataFrame:  # fmt: skip
    """Every mode and seed on ``device`` (float16 emulated on CPU, native on CUDA)."""
    rows = [r for m in modes for s in seeds for r in train_mode(MODES[m], s, STEPS[quick], device)]
    return pd.DataFrame(rows)


def bottom_zero(rows: pd.DataFrame, mode: str) -> pd.Series:
    """Per seed: layer 1's zero fraction averaged over the recorded steps."""
    part = rows[(rows["mode"] == mode) & (rows["layer"] == 1)]
    return part.groupby("seed")["zero_frac"].mean()


def final_loss(rows: pd.DataFrame, mode: str) -> pd.Series:
    """Per seed: the loss at the last recorded step."""
    part = rows[(rows["mode"] == mode) & (rows["layer"] == 1)]
    last: pd.Series = part[part["step"] == part["step"].max()].set_index("seed")["loss"]
    return last


def claims(rows: pd.DataFrame, scaled: str = "AMP + loss scaling") -> list[Claim]:
    """float16 zeroes the bottom layer's gradients; loss scaling keeps most of them; float32
    keeps all; the scaled run ends no worse than pure float16."""
    pure = bottom_zero(rows, "pure float16")
    amp = bottom_zero(rows, scaled)
    f32 = bottom_zero(rows, "float32")
    n = len(pure)
    return [
        Claim("pure float16: over half the bottom layer's weight gradients are zero",
              int((pure > 0.5).sum()), n, needed(n)),
        Claim(f"{scaled}: fewer zero bottom-layer gradients than pure float16 (by half)",
              int((amp < pure / 2).sum()), n, needed(n)),
        Claim("float32: no zero weight gradient in the bottom layer", int((f32 == 0).sum()),
              len(f32), len(f32)),
    ]  # fmt: skip
