"""The doctor's light hooks and the per-step statistics they gather, and how they are read.

One forward hook per layer reduces the layer's output to (max |x|, mean |x|), a tensor hook
does the same for the gradient arriving at that output, and after backward the weights'
gradients are reduced the same way. Nothing is copied; one host sync per step reads the
whole step's statistics (``max |x|`` is inf if any value is, NaN if any value is, so it
doubles as the finiteness check).

Gradients are attributed to the layer whose backward computed them: the gradient arriving
at layer ``k``'s output is produced by layer ``k+1`` (or the head, or the loss).
"""

import math
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from stability.train.trainer import Trainer

# Columns of the per-step statistics matrix: one row per watched layer, one for the loss.
ACT_MAX, ACT_MEAN, GRAD_MAX, GRAD_MEAN, WGRAD_MAX = range(5)
CHECKED = [ACT_MAX, GRAD_MAX, WGRAD_MAX]  # max |x| columns: non-finite iff any value is
STAT_NAMES = (
    "act_max_abs",
    "act_mean_abs",
    "grad_max_abs",
    "grad_mean_abs",
    "weight_grad_max_abs",
)


def _reduce(x: torch.Tensor) -> torch.Tensor:
    """(max |x|, mean |x|) on x's device, without a copy of x; the max propagates inf and NaN.

    The mean may overflow for huge finite values; it is informational, never the check.
    """
    x = x.detach()
    big = torch.linalg.vector_norm(x, math.inf)
    mean = torch.linalg.vector_norm(x, 1) / max(1, x.numel())
    return torch.stack([big, mean]).double()


def _max_abs(x: torch.Tensor) -> torch.Tensor:
    big: torch.Tensor = torch.linalg.vector_norm(x.detach(), math.inf)
    return big.double()


def _params(module: nn.Module) -> list[nn.Parameter]:
    return list(module.parameters())


class Watch:
    """The doctor's light hooks on a trainer's layers (or on nothing but the loss).

    ``layers=False`` watches only the loss: the cheap detector that can say *when* but not
    *where* (the witness of the attribution property).
    """

    def __init__(self, trainer: Trainer, layers: bool = True) -> None:
        self.trainer = trainer
        self.watched = trainer.model.watched() if layers else []
        self.labels = [label for label, _ in self.watched]
        n = len(self.watched)
        self._fwd: list[torch.Tensor | None] = [None] * n
        self._grad: list[torch.Tensor | None] = [None] * n
        self._handles: list[RemovableHandle] = []

    def _on_output(self, i: int, out: torch.Tensor) -> None:
        self._fwd[i] = _reduce(out)
        if out.requires_grad:

            def on_grad(g: torch.Tensor) -> None:
                self._grad[i] = _reduce(g)

            out.register_hook(on_grad)  # type: ignore[no-untyped-call]

    def __enter__(self) -> "Watch":
        for i, (_, module) in enumerate(self.watched):
            self._handles.append(
                module.register_forward_hook(lambda m, a, out, i=i: self._on_output(i, out))
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def step_stats(self, loss: torch.Tensor) -> torch.Tensor:
        """(layers + 1, 5) float64 matrix of this step; the last row is the loss."""
        zero = torch.zeros(2, dtype=torch.float64, device=loss.device)
        rows = []
        for i, (_, module) in enumerate(self.watched):
            fwd = self._fwd[i] if self._fwd[i] is not None else zero
            grad = self._grad[i] if self._grad[i] is not None else zero
            grads = [
                p.grad.detach().abs().amax().double() for p in _params(module) if p.grad is not None
            ]
            wgrad = torch.stack(grads).amax() if grads else zero[0]
            assert fwd is not None and grad is not None
            rows.append(torch.cat([fwd, grad, wgrad.reshape(1)]))
            self._fwd[i] = None
            self._grad[i] = None
        lv = loss.detach().abs().double().reshape(1)
        rows.append(torch.cat([lv, lv, torch.zeros(3, dtype=torch.float64, device=loss.device)]))
        return torch.stack(rows)

    def weight_max(self) -> torch.Tensor:
        """max |w| per watched layer (after an update)."""
        if not self.watched:
            params = list(self.trainer.model.parameters())
            return torch.stack([_max_abs(p) for p in params]).amax().reshape(1)
        return torch.stack(
            [torch.stack([_max_abs(p) for p in _params(m)]).amax() for _, m in self.watched]
        )


def locate(stats: torch.Tensor, labels: list[str]) -> tuple[str, int | None, str, float] | None:
    """First non-finite entry of a step matrix in execution order: (where, layer, phase, value)."""
    finite = torch.isfinite(stats).tolist()
    values = stats.tolist()
    n = len(labels)
    for i in range(n):  # forward: layers in order, then the loss
        if not finite[i][ACT_MAX]:
            return labels[i], i + 1, "forward", values[i][ACT_MAX]
    if not finite[n][ACT_MAX]:
        return "loss", None, "forward", values[n][ACT_MAX]
    if n and not finite[n - 1][GRAD_MAX]:  # gradient at the head's output: made by the loss
        return "loss", None, "backward", values[n - 1][GRAD_MAX]
    for j in range(n - 1, -1, -1):  # backward: layers in reverse
        if not finite[j][WGRAD_MAX]:
            return labels[j], j + 1, "backward", values[j][WGRAD_MAX]
        if j >= 1 and not finite[j - 1][GRAD_MAX]:
            return labels[j], j + 1, "backward", values[j - 1][GRAD_MAX]
    return None


def last_finite(
    current: torch.Tensor,
    previous: torch.Tensor | None,
    weights: torch.Tensor | None,
    labels: list[str],
    step: int,
) -> pd.DataFrame:
    """Per layer, the latest finite statistics: this step's where finite, else the last step's."""
    rows = []
    cur = current.tolist()
    prev = previous.tolist() if previous is not None else None
    wmax = weights.tolist() if weights is not None and len(labels) else [math.nan] * len(labels)
    for i, label in enumerate(labels):
        row: dict[str, Any] = {"layer": i + 1, "where": label}
        for k, name in enumerate(STAT_NAMES):
            value, at = cur[i][k], int(step)
            at_opt: int | None = at
            if not math.isfinite(value):
                value, at_opt = (prev[i][k], step - 1) if prev is not None else (math.nan, None)
            row[name] = value
            row[f"{name}_step"] = at_opt
        row["weight_max_abs"] = wmax[i]
        rows.append(row)
    return pd.DataFrame(rows)
