"""Dropout: an MLP that overfits a small noisy classification set, with p = 0, 0.2, 0.5.

The data: 10 Gaussian inputs, labels from a random hyperplane with 20 % of them flipped
(the best test accuracy is 0.8), 200 training and 500 test points. The MLP (10 -> 128 ->
128 -> 2, ReLU, Kaiming init, plain SGD) memorises the flipped labels without dropout.
Dropout (the notes' inverted dropout, ``notes.regularisation.dropout``, its masks from a
generator seeded per run) sits after each hidden activation, in training only.

Per run the rows hold the accuracy curves and, at the last step, three checks: eval mode
is the identity (the eval logits equal the dropout-free network's bit for bit),
training-mode dropout is unbiased (the mean logit over ``MASKS`` masks of the last layer
matches the eval logit within 5 standard errors), and fixing the seed and the initial
weights reproduces the run bit for bit (first seeds only).
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from stability.core.inits import init_linear_
from stability.experiments.common import Claim, needed
from stability.notes.regularisation import dropout, dropout_unscaled

NAME = "dropout"
DIM, HIDDEN, CLASSES = 10, 128, 2
N_TRAIN, N_TEST = 200, 500
FLIP = 0.2
PS = (0.0, 0.2, 0.5)
LR = 0.05  # plain minibatch SGD, as in the notes' chapters
BATCH = 50
STEPS = {True: 300, False: 1000}
EVERY = 25  # steps between recorded accuracies
MASKS = 200  # masks averaged in the unbiasedness check
SIGMAS = 5.0  # per logit: P(|z| > 5) = 5.7e-7, times 200 logits: 1e-4 per seed
REPRODUCED_SEEDS = 3  # seeds rerun for the reproducibility check
DATA_OFFSET, MASK_OFFSET = 52_711, 7_001

DropFn = Callable[[torch.Tensor, float, torch.Generator | None, bool], torch.Tensor]


def _forgotten(
    x: torch.Tensor, p: float, gen: torch.Generator | None, training: bool
) -> torch.Tensor:
    """Known-bad: a model whose dropout was left out (the gap claim's witness)."""
    return x


def _always_on(
    x: torch.Tensor, p: float, gen: torch.Generator | None, training: bool
) -> torch.Tensor:
    """Known-bad: dropout that keeps dropping at test time (the eval-mode witness)."""
    return dropout(x, p, gen, True)


# The notes' inverted dropout, and the witnesses' known-bad variants.
VARIANTS: dict[str, DropFn] = {"inverted": dropout, "unscaled": dropout_unscaled,
                               "forgotten": _forgotten, "always on": _always_on}  # fmt: skip


def make_data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (700, 10), labels (700,)): rows 0..199 train, the rest test; 20 % flipped."""
    gen = torch.Generator().manual_seed(seed + DATA_OFFSET)
    x = torch.randn(N_TRAIN + N_TEST, DIM, generator=gen)
    labels = (x @ torch.randn(DIM, generator=gen) > 0).long()
    flip = torch.rand(N_TRAIN + N_TEST, generator=gen) < FLIP
    return x, torch.where(flip, 1 - labels, labels)


class DropoutMLP(nn.Module):
    """10 -> 128 -> 128 -> 2 with ReLU and dropout after each hidden layer (training only)."""

    def __init__(self, p: float, init_seed: int, drop: DropFn, mask_seed: int) -> None:
        super().__init__()
        self.p, self.drop = p, drop
        self.layers = nn.ModuleList(
            [nn.Linear(DIM, HIDDEN), nn.Linear(HIDDEN, HIDDEN), nn.Linear(HIDDEN, CLASSES)]
        )
        gen = torch.Generator().manual_seed(init_seed)
        for layer in self.layers:
            assert isinstance(layer, nn.Linear)
            init_linear_(layer, "kaiming_normal", gen)
        self.masks = torch.Generator().manual_seed(mask_seed)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer, after its dropout: what the output layer reads."""
        for layer in self.layers[:-1]:
            x = self.drop(torch.relu(layer(x)), self.p, self.masks, self.training)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers[-1](self.features(x))
        return out


@dataclass
class Run:
    """One training run: its recorded curve and the trained model."""

    rows: list[dict[str, object]]
    model: DropoutMLP


def train_run(
    seed: int,
    p: float,
    steps: int,
    variant: str = "inverted",
    init_seed: int | None = None,
    mask_seed: int | None = None,
) -> Run:
    """Train one MLP; the seed fixes data, batch order, initial weights and masks (unless
    ``init_seed`` or ``mask_seed`` say otherwise: the reproducibility witnesses)."""
    x, labels = make_data(seed)
    x_tr, y_tr, x_te, y_te = x[:N_TRAIN], labels[:N_TRAIN], x[N_TRAIN:], labels[N_TRAIN:]
    model = DropoutMLP(p, seed if init_seed is None else init_seed, VARIANTS[variant],
                       seed + MASK_OFFSET if mask_seed is None else mask_seed)  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    order = torch.Generator().manual_seed(seed)
    rows: list[dict[str, object]] = []
    perm = torch.randperm(N_TRAIN, generator=order)
    for step in range(steps + 1):
        if step % EVERY == 0 or step == steps:
            model.eval()
            with torch.no_grad():
                train_acc = (model(x_tr).argmax(1) == y_tr).float().mean()
                test_acc = (model(x_te).argmax(1) == y_te).float().mean()
            rows.append({"p": p, "seed": seed, "step": step, "train_acc": float(train_acc),
                         "test_acc": float(test_acc)})  # fmt: skip
            model.train()
        if step == steps:
            break
        start = (step * BATCH) % N_TRAIN
        if start == 0 and step > 0:
            perm = torch.randperm(N_TRAIN, generator=order)
        idx = perm[start : start + BATCH]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx]).backward()  # type: ignore[no-untyped-call]
        opt.step()
    model.eval()
    return Run(rows, model)


def eval_is_identity(model: DropoutMLP, x: torch.Tensor) -> bool:
    """In eval mode the network computes exactly what it computes with p = 0."""
    with torch.no_grad():
        dropped = model(x)
        p, model.p = model.p, 0.0
        plain = model(x)
        model.p = p
    return torch.equal(dropped, plain)


def unbiased(model: DropoutMLP, x: torch.Tensor, masks: int = MASKS) -> bool:
    """The last layer's logits, averaged over ``masks`` training-mode dropout masks of its
    input, match the eval-mode logits within ``SIGMAS`` standard errors, every entry."""
    if model.p == 0.0:
        return True
    head = model.layers[-1]
    with torch.no_grad():
        h = model.features(x)  # eval: no dropout
        samples = torch.stack(
            [head(model.drop(h, model.p, model.masks, True)) for _ in range(masks)]
        )
        err = (samples.mean(0) - head(h)).abs()
        se = samples.std(0) / math.sqrt(masks)
    return bool((err <= SIGMAS * se + 1e-6).all())


def run(seeds: Sequence[int], quick: bool, device: str = "cpu", variant: str = "inverted",
        ps: Sequence[float] = PS) -> pd.DataFrame:  # fmt: skip
    """Every p and seed (CPU: the network is small); checks on the last row of each run."""
    rows: list[dict[str, object]] = []
    steps = STEPS[quick]
    for p in ps:
        for seed in seeds:
            result = train_run(seed, p, steps, variant)
            x = make_data(seed)[0][N_TRAIN : N_TRAIN + 100]
            last = result.rows[-1]
            last["eval_is_identity"] = eval_is_identity(result.model, x)
            last["unbiased"] = unbiased(result.model, x)
            if p == max(ps) and seed in list(seeds)[:REPRODUCED_SEEDS]:
                again = train_run(seed, p, steps, variant)
                last["reproduced"] = same_run(result, again)
            rows += result.rows
    return pd.DataFrame(rows)


def same_run(a: Run, b: Run) -> bool:
    """Bit for bit: every recorded accuracy and every final weight."""
    curves = [(r["train_acc"], r["test_acc"]) for r in a.rows] == [
        (r["train_acc"], r["test_acc"]) for r in b.rows
    ]
    weights = all(
        torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True)
    )
    return curves and weights


def finals(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (p, seed): the last step, with the train - test accuracy gap."""
    last = rows[rows["step"] == rows["step"].max()].copy()
    last["gap"] = last["train_acc"] - last["test_acc"]
    out: pd.DataFrame = last.reset_index(drop=True)
    return out


def claims(rows: pd.DataFrame) -> list[Claim]:
    """p = 0.5 narrows the gap; eval mode is the identity; dropout is unbiased; reproducible."""
    f = finals(rows).set_index(["p", "seed"])
    gap = f["gap"].unstack("p")
    n = len(gap)
    narrower = int((gap[max(PS)] < gap[0.0]).sum())
    dropped = f[f.index.get_level_values("p") > 0]
    ident = int(dropped["eval_is_identity"].astype(bool).sum())
    unbias = int(dropped["unbiased"].astype(bool).sum())
    rerun = f["reproduced"].dropna() if "reproduced" in f.columns else pd.Series(dtype=bool)
    return [
        Claim(f"train - test accuracy gap with p={max(PS):g} below p=0", narrower, n, needed(n)),
        Claim("eval mode is the identity (bit for bit)", ident, len(dropped), len(dropped)),
        Claim(f"mean logit over {MASKS} masks matches eval mode within {SIGMAS:g} SE", unbias,
              len(dropped), len(dropped)),
        Claim("same seed and initial weights reproduce the run bit for bit",
              int(rerun.astype(bool).sum()), len(rerun), len(rerun)),
    ]  # fmt: skip
