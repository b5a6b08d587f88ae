"""Weight decay: d2l's high-dimensional linear regression, lambda = 0 against 3 and a sweep.

``d = 200`` inputs, 20 training and 100 test points, ``y = 0.05 + sum_i 0.01 x_i +
N(0, 0.01^2)``, ``x ~ N(0, 1)``: with ten times more weights than points, plain SGD fits the
training set exactly and generalises badly. The penalty ``lambda/2 ||w||^2`` (not on the
bias, as the notes advise) turns each step into ``(1 - lr lambda) w - lr grad``: the weight
decays before the gradient step. Every run is trained twice, with the notes' closed-form step
(``notes.regularisation.sgd_step_weight_decay``) and with ``torch.optim.SGD(weight_decay=)``,
and the rows record how far apart the two weights are (float64: they must agree to
rounding). d2l's settings: w ~ N(0, 1), b = 0, batch 5, lr 0.003, 100 epochs.
"""

from collections.abc import Callable, Sequence

import pandas as pd
import torch

from stability.experiments.common import Claim, needed
from stability.notes.losses import l2_loss
from stability.notes.regularisation import sgd_step_weight_decay

NAME = "weight_decay"
DIM = 200
N_TRAIN, N_TEST = 20, 100
TRUE_W, TRUE_B = 0.01, 0.05
NOISE = 0.01
LR = 0.003
BATCH = 5
EPOCHS = 100
LAMBDAS = {True: (0.0, 1.0, 3.0, 10.0), False: (0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)}
AGREE = 1e-9  # float64 closed form vs torch: 400 steps of rounding (~1e-16 each) stay far below
DATA_OFFSET = 27_449


def make_data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (120, 200), y (120,)) for one seed: rows 0..19 train, 20..119 test."""
    gen = torch.Generator().manual_seed(seed + DATA_OFFSET)
    x = torch.randn(N_TRAIN + N_TEST, DIM, generator=gen, dtype=torch.float64)
    noise = NOISE * torch.randn(N_TRAIN + N_TEST, generator=gen, dtype=torch.float64)
    return x, x.sum(dim=1) * TRUE_W + TRUE_B + noise


def _losses(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared loss per seed: x (S, n, d), y (S, n), w (S, d), b (S,) -> (S,)."""
    return l2_loss((x * w.unsqueeze(1)).sum(-1) + b.unsqueeze(1), y).mean(dim=1)


StepFn = Callable[[torch.Tensor, torch.Tensor, float, float], torch.Tensor]


def train(
    seeds: Sequence[int], lambdas: Sequence[float], step: StepFn = sgd_step_weight_decay
) -> list[dict[str, object]]:
    """Every lambda and seed at once, both implementations; a row per lambda, seed, epoch.

    The notes' path writes the unpenalised gradient out (``x^T residual / B``) and decays in
    closed form (``step``: the notes' by default, a known-bad one for a witness); torch's
    path is autograd plus ``SGD(weight_decay=lambda)``, one parameter group per lambda, the
    bias in a group without decay.
    """
    data = [make_data(s) for s in seeds]
    x = torch.stack([d[0] for d in data])
    y = torch.stack([d[1] for d in data])
    x_tr, y_tr, x_te, y_te = x[:, :N_TRAIN], y[:, :N_TRAIN], x[:, N_TRAIN:], y[:, N_TRAIN:]
    init = torch.stack([
        torch.randn(DIM, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
        for s in seeds
    ])  # fmt: skip
    zeros = torch.zeros(len(seeds), dtype=torch.float64)
    notes = [(init.clone(), zeros.clone()) for _ in lambdas]
    w_torch = [init.clone().requires_grad_(True) for _ in lambdas]
    b_torch = torch.zeros(len(lambdas), len(seeds), dtype=torch.float64, requires_grad=True)
    groups = [{"params": [w], "weight_decay": lam} for w, lam in zip(w_torch, lambdas, strict=True)]
    opt = torch.optim.SGD([*groups, {"params": [b_torch], "weight_decay": 0.0}], lr=LR)
    orders = torch.stack([
        torch.argsort(torch.rand(EPOCHS, N_TRAIN, generator=torch.Generator().manual_seed(s)))
        for s in seeds
    ])  # fmt: skip
    rows_of = torch.arange(len(seeds)).unsqueeze(1)
    rows: list[dict[str, object]] = []

    def record(epoch: int) -> None:
        for k, lam in enumerate(lambdas):
            w, b = notes[k]
            with torch.no_grad():
                train_loss, test_loss = _losses(x_tr, y_tr, w, b), _losses(x_te, y_te, w, b)
                diff = (w - w_torch[k]).abs().amax(dim=1)
            norm = w.norm(dim=1)
            for i, seed in enumerate(seeds):
                rows.append({"lambda": lam, "seed": seed, "epoch": epoch,
                             "train_loss": float(train_loss[i]),
                             "test_loss": float(test_loss[i]), "w_norm": float(norm[i]),
                             "torch_w_diff": float(diff[i])})  # fmt: skip

    record(0)
    for epoch in range(1, EPOCHS + 1):
        for start in range(0, N_TRAIN, BATCH):
            idx = orders[:, epoch - 1, start : start + BATCH]
            xb, yb = x_tr[rows_of, idx], y_tr[rows_of, idx]  # (S, B, d), (S, B)
            for k, lam in enumerate(lambdas):
                w, b = notes[k]
                residual = (xb * w.unsqueeze(1)).sum(-1) + b.unsqueeze(1) - yb  # l2_grad
                grad_w = (residual.unsqueeze(-1) * xb).mean(dim=1)
                notes[k] = (
                    step(w, grad_w, LR, lam),
                    b - LR * residual.mean(dim=1),
                )  # the bias is not decayed; fmt: skip
            opt.zero_grad()
            loss = sum(_losses(xb, yb, w, b_torch[k]).sum() for k, w in enumerate(w_torch))
            loss.backward()  # type: ignore[union-attr]
            opt.step()
        record(epoch)
    return rows


def run(seeds: Sequence[int], quick: bool, device: str = "cpu") -> pd.DataFrame:
    """Every lambda of the sweep (CPU: 200 weights per seed)."""
    return pd.DataFrame(train(seeds, LAMBDAS[quick]))


def finals(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (lambda, seed): the last epoch's row."""
    last: pd.DataFrame = rows[rows["epoch"] == rows["epoch"].max()]
    return last.reset_index(drop=True)


def claims(rows: pd.DataFrame) -> list[Claim]:
    """lambda = 3 generalises better and shrinks the weights; both implementations agree."""
    f = finals(rows).set_index(["lambda", "seed"])
    off, on = f.loc[0.0], f.loc[3.0]
    n = len(off)
    lower = int((on["test_loss"] < off["test_loss"]).sum())
    shrink = int((on["w_norm"] < off["w_norm"] / 10).sum())
    worst = rows.groupby("seed")["torch_w_diff"].max()
    agree = int((worst < AGREE).sum())
    return [
        Claim("test loss with lambda=3 below lambda=0", lower, n, needed(n)),
        Claim("||w|| with lambda=3 under a tenth of lambda=0's", shrink, n, needed(n)),
        Claim(f"closed-form step and torch SGD(weight_decay) agree within {AGREE:g}", agree,
              len(worst), len(worst)),
    ]  # fmt: skip
