"""Under- and overfitting: d2l's polynomial regression, three model capacities, many seeds.

The target is a cubic, ``y = 5 + 1.2 x - 3.4 x^2/2! + 5.6 x^3/3! + N(0, 0.1^2)``, in the
features ``x^i / i!`` (the factorial keeps high powers from dominating the gradient),
``x ~ N(0, 1)``, 100 training and 100 test points. The same linear model on the first 4
features (the right degree), the first 2 (too few: a line, underfitting) and all 20 (too
many: overfitting), trained by minibatch SGD on the notes' squared loss ``(y' - y)^2 / 2``.
Every seed draws its own data and batch order; the seeds run side by side as one batched
tensor, with the gradient written out (``notes.losses.l2_grad``), in float64.
"""

import math
from collections.abc import Sequence

import pandas as pd
import torch

from stability.experiments.common import Claim, needed
from stability.notes.losses import l2_grad, l2_loss

NAME = "polynomial"
TRUE_W = (5.0, 1.2, -3.4, 5.6)
MAX_FEATURES = 20
N_TRAIN = N_TEST = 100
NOISE = 0.1
LR = 0.03  # d2l: 0.01; 0.03 reaches the noise floor within the quick 400 epochs
BATCH = 10
# (label, features used): d2l's three fits
MODELS = (("right degree (4 features)", 4), ("too few (2 features)", 2),
          ("too many (20 features)", 20))  # fmt: skip
EPOCHS = {True: 400, False: 1500}  # d2l trains the 20-feature model 1500 epochs
POINTS = 60  # epochs recorded per curve, log-spaced
DATA_OFFSET = 31_337


def make_data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (200, 20), labels (200,)) for one seed: rows 0..99 train, 100..199 test."""
    gen = torch.Generator().manual_seed(seed + DATA_OFFSET)
    x = torch.randn(N_TRAIN + N_TEST, 1, generator=gen, dtype=torch.float64)
    powers = torch.arange(MAX_FEATURES, dtype=torch.float64)
    features = x**powers / torch.exp(torch.lgamma(powers + 1))
    w = torch.zeros(MAX_FEATURES, dtype=torch.float64)
    w[: len(TRUE_W)] = torch.tensor(TRUE_W, dtype=torch.float64)
    y = features @ w + NOISE * torch.randn(N_TRAIN + N_TEST, generator=gen, dtype=torch.float64)
    return features, y


def _recorded(epochs: int) -> set[int]:
    marks = torch.logspace(0, math.log10(epochs), POINTS).round().long().tolist()
    return {0, *marks}


def fit(
    seeds: Sequence[int],
    epochs: int,
    lr: float,
    models: Sequence[tuple[str, int]] = MODELS,
) -> list[dict[str, object]]:
    """Train the three models for every seed at once; rows at the recorded epochs.

    One weight tensor (models, seeds, 20) with the unused features masked out, so a step
    is a handful of batched products however many seeds and models there are.
    """
    data = [make_data(s) for s in seeds]
    x = torch.stack([f for f, _ in data])  # (S, 200, 20)
    y = torch.stack([t for _, t in data])  # (S, 200)
    x_tr, y_tr, x_te, y_te = x[:, :N_TRAIN], y[:, :N_TRAIN], x[:, N_TRAIN:], y[:, N_TRAIN:]
    used = torch.tensor([n for _, n in models]).unsqueeze(1)
    mask = (torch.arange(MAX_FEATURES) < used).to(torch.float64).unsqueeze(1)  # (M, 1, F)
    w = torch.zeros(len(models), len(seeds), MAX_FEATURES, dtype=torch.float64)
    # Each seed's batch order for every epoch, from its own generator, drawn up front.
    orders = torch.stack(
        [
            torch.argsort(torch.rand(epochs, N_TRAIN, generator=torch.Generator().manual_seed(s)))
            for s in seeds
        ]
    )  # (S, epochs, n)  fmt: skip
    keep = _recorded(epochs)
    rows_of = torch.arange(len(seeds)).unsqueeze(1)
    rows: list[dict[str, object]] = []

    def record(epoch: int) -> None:
        train = l2_loss(torch.einsum("snf,msf->msn", x_tr, w), y_tr).mean(dim=2)
        test = l2_loss(torch.einsum("snf,msf->msn", x_te, w), y_te).mean(dim=2)
        for m, (label, n_features) in enumerate(models):
            for i, seed in enumerate(seeds):
                rows.append({"model": label, "features": n_features, "seed": seed,
                             "epoch": epoch, "train_loss": float(train[m, i]),
                             "test_loss": float(test[m, i])})  # fmt: skip

    record(0)
    for epoch in range(1, epochs + 1):
        order = orders[:, epoch - 1]
        for start in range(0, N_TRAIN, BATCH):
            idx = order[:, start : start + BATCH]  # (S, B)
            xb, yb = x_tr[rows_of, idx], y_tr[rows_of, idx]  # (S, B, F), (S, B)
            pred = (w.unsqueeze(2) * xb.unsqueeze(0)).sum(-1)  # (M, S, B)
            residual = l2_grad(pred, yb)  # d l / d y'
            grad = (residual.unsqueeze(-1) * xb.unsqueeze(0)).sum(2) / idx.shape[1]
            w = w - lr * grad * mask
        if epoch in keep:
            record(epoch)
    return rows


def run(seeds: Sequence[int], quick: bool, device: str = "cpu") -> pd.DataFrame:
    """Curves of train and test loss for the three capacities (CPU: the model is tiny)."""
    return pd.DataFrame(fit(seeds, EPOCHS[quick], LR))


def finals(rows: pd.DataFrame) -> pd.DataFrame:
    """Per seed: the final train and test loss of each model, one column per model."""
    last = rows[rows["epoch"] == rows.groupby("model")["epoch"].transform("max")]
    return last.pivot_table(index="seed", columns="features",
                            values=["train_loss", "test_loss"])  # fmt: skip


def claims(rows: pd.DataFrame) -> list[Claim]:
    """Underfitting: the 2-feature model's train loss stays 10x above the right model's.
    Overfitting: the 20-feature model's test loss stays above the right model's.
    The right degree reaches the noise floor: test loss below 2x sigma^2/2."""
    f = finals(rows)
    n = len(f)
    under = int((f["train_loss"][2] > 10 * f["train_loss"][4]).sum())
    over = int((f["test_loss"][20] > f["test_loss"][4]).sum())
    floor = int((f["test_loss"][4] < 2 * NOISE**2 / 2).sum())
    return [
        Claim("too few features underfit: train loss > 10x the right degree's", under, n,
              needed(n)),
        Claim("too many features generalise worse: test loss above the right degree's", over, n,
              needed(n)),
        Claim("the right degree reaches the noise floor: test loss < 2 sigma^2/2", floor, n,
              needed(n)),
    ]  # fmt: skip
