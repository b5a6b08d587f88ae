"""Dynamic loss scaling (the ``torch.amp.GradScaler`` rule) and what it saves in float16.

Small gradients flush to zero in float16 (below about 2^-25 = 3e-8). Scaling the loss by
``S`` scales every gradient by ``S`` on the way down, so they stay representable; the
weights' gradients are divided by ``S`` again (in float32) before the update. GradScaler's
rule: start at ``S = 2^16``; on a step whose gradients hold inf or NaN, skip the update and
halve ``S``; after ``growth_interval`` (2000) clean steps in a row, double ``S``.

``LossScaler`` implements that rule for the emulated path on CPU (the model computes in
float32 and rounds to float16 at layer boundaries, so GradScaler's fp16 machinery has nothing
to act on). On CUDA the trainer uses ``torch.amp.GradScaler`` itself, with autocast.
``compare_loss_scaling`` runs the same training with and without scaling and reports, per
layer, the fraction of gradient values flushed to zero.
"""

import math
from dataclasses import replace

import pandas as pd
import torch

from stability.errors import StabilityError
from stability.train.trainer import TrainConfig, Trainer

INIT_SCALE = 2.0**16
GROWTH_FACTOR = 2.0
BACKOFF_FACTOR = 0.5
GROWTH_INTERVAL = 2000


class LossScaler:
    """GradScaler's dynamic loss scale, for gradients held in float32 (emulated precision).

    Use as ``scale(loss).backward(); step(optimizer); update()``; ``step`` unscales the
    gradients in place and skips the update if any is inf or NaN.
    """

    def __init__(
        self,
        init_scale: float = INIT_SCALE,
        growth_factor: float = GROWTH_FACTOR,
        backoff_factor: float = BACKOFF_FACTOR,
        growth_interval: int = GROWTH_INTERVAL,
        dtype: torch.dtype = torch.float16,
    ) -> None:
        if not (init_scale > 0 and growth_factor > 1 and 0 < backoff_factor < 1):
            raise StabilityError(
                "loss scaler needs init_scale > 0, growth_factor > 1, 0 < backoff_factor < 1; "
                f"got {init_scale}, {growth_factor}, {backoff_factor}"
            )
        if growth_interval < 1:
            raise StabilityError(f"growth_interval must be >= 1, got {growth_interval}")
        self._scale = float(init_scale)
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.dtype = dtype
        self._growth_tracker = 0
        self._found_inf: bool | None = None  # None: this step's gradients not unscaled yet

    def get_scale(self) -> float:
        return self._scale

    def scale(self, outputs: torch.Tensor) -> torch.Tensor:
        """The loss times the current scale (backward through it gives scaled gradients)."""
        return outputs * self._scale

    def unscale_(self, optimizer: torch.optim.Optimizer) -> bool:
        """Divide the gradients by the scale in place; True if any gradient is inf or NaN."""
        inv = 1.0 / self._scale
        bad = torch.zeros((), dtype=torch.bool)
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    bad = bad | ~torch.isfinite(p.grad).all().cpu()
                    p.grad.mul_(inv)
        self._found_inf = bool(bad)
        return self._found_inf

    def step(self, optimizer: torch.optim.Optimizer) -> float | None:
        """Unscale (if not done yet) and update, unless a gradient was inf/NaN: then skip."""
        if self._found_inf is None:
            self.unscale_(optimizer)
        if self._found_inf:
            return None
        optimizer.step()
        return None

    def update(self) -> None:
        """Back off after a bad step, grow after ``growth_interval`` clean steps in a row."""
        if self._found_inf is None:
            raise StabilityError("update() called before step() in this iteration")
        if self._found_inf:
            self._scale *= self.backoff_factor
            self._growth_tracker = 0
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self.growth_interval:
                self._scale *= self.growth_factor
                self._growth_tracker = 0
        self._found_inf = None


def _grad_fractions(g: torch.Tensor, trainer: Trainer) -> torch.Tensor:
    """(flushed, zero) fractions of an activation gradient as the dtype stores it."""
    if trainer.mode == "emulated":
        stored = g.to(trainer.dtype.dtype)
        return torch.stack(
            [((g != 0) & (stored == 0)).float().mean(), (stored == 0).float().mean()]
        )
    return torch.stack([torch.full((), math.nan, device=g.device), (g == 0).float().mean()])


def compare_loss_scaling(cfg: TrainConfig, steps: int | None = None) -> pd.DataFrame:
    """Train ``cfg`` (a float16/bfloat16 config) without and with loss scaling.

    One tidy row per (loss_scaling, layer), means over steps: of the gradient arriving at the
    layer's output (``act_grad_*``) and of its weight gradient (``weight_grad_*``), the
    fraction that is zero once stored in the dtype (``*_zero_frac``: lost to underflow here or
    above, or exactly zero) and the fraction of nonzero values that flushed to zero in this
    rounding (``*_flush_frac``; emulated only, NaN natively). The head is the last layer.
    ``final_loss``, ``skipped_steps`` and ``final_scale`` describe the run.
    """
    if not cfg.model.dtype.startswith(("float16", "bfloat16")):
        raise StabilityError(
            f"loss scaling compares reduced precision; dtype {cfg.model.dtype!r} is not one of "
            "['bfloat16', 'float16']"
        )
    n_steps = cfg.steps if steps is None else steps
    rows: list[dict[str, object]] = []
    for scaling in (False, True):
        trainer = Trainer(replace(cfg, loss_scaling=scaling))
        trainer.track_grad_flush = True
        blocks = trainer.model.body.layers
        act_sum = torch.zeros(len(blocks), 2)
        weight_sum = torch.zeros(len(blocks) + 1, 2)
        current: dict[int, torch.Tensor] = {}

        def watch(
            i: int,
            out: torch.Tensor,
            trainer: Trainer = trainer,
            current: dict[int, torch.Tensor] = current,
        ) -> None:
            def on_grad(g: torch.Tensor) -> None:
                current[i] = _grad_fractions(g.detach(), trainer)

            if out.requires_grad:
                out.register_hook(on_grad)  # type: ignore[no-untyped-call]

        handles = [
            b.register_forward_hook(lambda m, a, out, i=i: watch(i, out))
            for i, b in enumerate(blocks)
        ]
        loss = math.nan
        try:
            for step in range(n_steps):
                current.clear()
                loss = float(trainer.compute(step))
                nan2 = torch.full((2,), math.nan)
                act_sum += torch.stack([current.get(i, nan2).cpu() for i in range(len(blocks))])
                names = [f"body.blocks.{j}.linear.weight" for j in range(len(blocks))]
                names.append("head.linear.weight")
                weight_sum += torch.stack([trainer.grad_flush[n].cpu() for n in names])
                trainer.apply()
        finally:
            for h in handles:
                h.remove()
        scale = trainer.scaler.get_scale() if trainer.scaler is not None else 1.0
        for j in range(len(blocks) + 1):
            act = (act_sum[j] / n_steps).tolist() if j < len(blocks) else [math.nan, math.nan]
            weight = (weight_sum[j] / n_steps).tolist()
            rows.append(
                {
                    **cfg.model.as_dict(),
                    "precision_mode": trainer.mode,
                    "loss_scaling": scaling,
                    "layer": j + 1,
                    "is_head": j == len(blocks),
                    "act_grad_zero_frac": act[1],
                    "act_grad_flush_frac": act[0],
                    "weight_grad_zero_frac": weight[1],
                    "weight_grad_flush_frac": weight[0],
                    "final_loss": loss,
                    "skipped_steps": trainer.skipped_steps,
                    "final_scale": scale,
                    "steps": n_steps,
                }
            )
    return pd.DataFrame(rows)
