"""What loss scaling saves in float16: the same training with and without it, per layer.

The mechanism (``LossScaler``, GradScaler's rule) lives in ``stability.train.scaler``; this
module is the experiment. ``compare_loss_scaling`` runs one config twice and reports, per
layer, the fraction of gradient values flushed to zero; ``zero_fractions_by_layer`` and
``scaling_runs`` shape that table for reading side by side.
"""

import math
from dataclasses import replace

import pandas as pd
import torch

from stability.errors import StabilityError
from stability.train.scaler import LossScaler
from stability.train.trainer import TrainConfig, Trainer, flush_fraction

# LossScaler moved to stability.train.scaler; the old import path keeps working.
__all__ = ["LossScaler", "compare_loss_scaling", "scaling_runs", "zero_fractions_by_layer"]

ZERO_FRACTIONS = ["act_grad_zero_frac", "weight_grad_zero_frac"]


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
                current[i] = flush_fraction(g.detach(), trainer.dtype.dtype, trainer.mode)

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
        scale = trainer.scaler.get_scale()
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


def zero_fractions_by_layer(table: pd.DataFrame) -> pd.DataFrame:
    """One row per layer: the zero fractions unscaled and scaled, side by side."""
    return pd.concat(
        [
            part.set_index("layer")[ZERO_FRACTIONS].add_suffix("_scaled" if on else "_unscaled")
            for on, part in table.groupby("loss_scaling")
        ],
        axis=1,
    )


def scaling_runs(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run (loss scaling off, then on): final loss, skipped steps, final scale."""
    cols = ["loss_scaling", "final_loss", "skipped_steps", "final_scale"]
    runs = table.drop_duplicates("loss_scaling")[cols].sort_values("loss_scaling")
    return runs.reset_index(drop=True)
