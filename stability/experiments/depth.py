"""Trainability with depth: loss after a fixed budget of steps, beside the stability verdict.

Each config is trained with the project's trainer (``train.trainer.train``: plain SGD on the
``teacher`` regression task, targets standardised so a network that learns nothing sits at
loss ~1) and probed with the sweep's ``run_cell`` for the stability verdict of the same
network (``results.tables.judged_table``: forward and backward variance growth over the
depth, seeds averaged). The configs are the notes' and He et al.'s:

- sigmoid with the notes' default N(0, 0.01^2) at depth 10: the gradient vanishes;
- relu with Xavier against Kaiming at depth 30 (He et al. 2015: Xavier stalls, Kaiming
  trains);
- the scaled logistic 4 sigmoid(x) - 2 against sigmoid, Xavier, depth 20.

The outcome of a run is ``loss_ratio``: the mean loss of the last ``TAIL`` steps over the
loss of predicting 0 (the targets' mean square, 1 once standardised): the fraction of the
loss left; a diverged run (non-finite loss) has ratio inf. Width 128: at width 32 a
Kaiming relu net of depth 30 already drifts a decade per seed (finite width), and the
point here is the init, not the width.
"""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from stability.core.config import MLPConfig
from stability.experiments.common import Claim, needed
from stability.results.tables import judged_table
from stability.sweep.cells import Cell, run_cell
from stability.train.trainer import TrainConfig, make_dataset, train

NAME = "depth"
CONFIGS: tuple[tuple[str, str, int], ...] = (
    ("sigmoid", "normal", 10),
    ("relu", "xavier_normal", 30),
    ("relu", "kaiming_normal", 30),
    ("sigmoid", "xavier_normal", 20),
    ("scaled_logistic", "xavier_normal", 20),
)
WIDTH = 128
BATCH = 64
SAMPLES = 512
OPTIMIZER = "momentum"
LR = 0.002  # plain SGD at 0.01-0.02 leaves Kaiming relu at depth 30 half trained or diverged
STEPS = {True: 150, False: 500}
TAIL = 20  # steps averaged for the final loss
TRAINED = 0.5  # loss ratio below this: the network learned (at least half the loss gone)
STALLED = 0.9  # above this: it learned (almost) nothing in the budget
PROBE_BATCH = 256


def outcome(losses: Sequence[float], baseline: float) -> float:
    """Mean loss of the last ``TAIL`` steps over ``baseline``; inf when the run diverged."""
    if not losses or not all(math.isfinite(v) for v in losses):
        return math.inf
    return float(np.mean(losses[-TAIL:]) / baseline)


def train_config(
    activation: str, init: str, depth: int, seed: int, steps: int, device: str = "cpu"
) -> dict[str, object]:
    """One training run's row: the loss ratio and a thinned loss curve."""
    model = MLPConfig(depth, WIDTH, activation, init, "float32", True, seed, device)
    cfg = TrainConfig(model, lr=LR, optimizer=OPTIMIZER, steps=steps, data="teacher",
                      batch=BATCH, samples=SAMPLES)  # fmt: skip
    result = train(cfg)
    targets = make_dataset(cfg.data, WIDTH, SAMPLES, cfg.classes, seed).y
    baseline = float((targets**2).mean())  # the loss of predicting 0
    return {"activation": activation, "init": init, "depth": depth, "width": WIDTH,
            "seed": seed, "steps": steps, "first_loss": result.losses[0],
            "final_loss": result.final_loss, "loss_ratio": outcome(result.losses, baseline),
            "diverged_at": result.diverged_at,
            "curve": [round(v, 6) for v in result.losses[:: max(1, steps // 50)]]}  # fmt: skip


def verdicts(
    configs: Sequence[tuple[str, str, int]], seeds: Sequence[int], device: str = "cpu"
) -> pd.DataFrame:
    """The stability verdict of each config, from the probe on the same networks."""
    rows = []
    for activation, init, depth in configs:
        for seed in seeds:
            config = MLPConfig(depth, WIDTH, activation, init, "float32", True, seed, device)
            rows += run_cell(Cell(config, PROBE_BATCH))
    judged = judged_table(pd.DataFrame(rows))
    keep = ["activation", "init", "depth", "verdict", "fwd_log10_growth", "bwd_log10_growth"]
    return judged[keep]


def run(
    seeds: Sequence[int],
    quick: bool,
    device: str = "cpu",
    configs: Sequence[tuple[str, str, int]] = CONFIGS,
) -> pd.DataFrame:
    """Every config and seed: its training outcome beside its verdict."""
    rows = [train_config(a, i, d, s, STEPS[quick], device) for a, i, d in configs for s in seeds]
    trained = pd.DataFrame(rows)
    return trained.merge(verdicts(configs, seeds, device), on=["activation", "init", "depth"])


def _ratios(rows: pd.DataFrame, activation: str, init: str, depth: int) -> pd.Series:
    part = rows[(rows["activation"] == activation) & (rows["init"] == init)
                & (rows["depth"] == depth)]  # fmt: skip
    return part.set_index("seed")["loss_ratio"].astype(float)


def predicted(rows: pd.DataFrame) -> pd.Series:
    """Per run: does the outcome agree with the verdict? stable trains, else stalls."""
    ratio = rows["loss_ratio"].astype(float)
    stable = rows["verdict"] == "stable"
    return (stable & (ratio < TRAINED)) | (~stable & ~(ratio < STALLED))


def claims(rows: pd.DataFrame) -> list[Claim]:
    """The verdict predicts the outcome; Kaiming beats Xavier for relu; the scaled logistic
    beats sigmoid; the notes' N(0, 0.01^2) sigmoid stalls at depth 10."""
    agree = predicted(rows)
    kaiming = _ratios(rows, "relu", "kaiming_normal", 30)
    xavier = _ratios(rows, "relu", "xavier_normal", 30)
    scaled = _ratios(rows, "scaled_logistic", "xavier_normal", 20)
    sigmoid = _ratios(rows, "sigmoid", "xavier_normal", 20)
    notes = _ratios(rows, "sigmoid", "normal", 10)
    out = [Claim(f"the verdict predicts the outcome (stable: ratio < {TRAINED:g}, "
                 f"else >= {STALLED:g})", int(agree.sum()), len(agree), len(agree))]  # fmt: skip
    if len(kaiming) and len(xavier):
        n = len(kaiming)
        out.append(
            Claim(
                "relu depth 30: Kaiming trains (ratio < 0.5) where Xavier stalls",
                int(((kaiming < TRAINED) & (xavier >= STALLED)).sum()),
                n,
                needed(n),
            )
        )
    if len(scaled) and len(sigmoid):
        n = len(scaled)
        out.append(
            Claim(
                "depth 20, Xavier: scaled logistic's final loss below sigmoid's",
                int((scaled < sigmoid).sum()),
                n,
                needed(n),
            )
        )
    if len(notes):
        n = len(notes)
        out.append(
            Claim(
                f"sigmoid with N(0, 0.01^2) at depth 10 stalls (ratio >= {STALLED:g})",
                int((notes >= STALLED).sum()),
                n,
                needed(n),
            )
        )
    return out  # fmt: skip
