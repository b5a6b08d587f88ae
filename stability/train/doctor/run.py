"""The divergence run: train step by step under a ``Watch``, diagnose the first NaN or Inf.

The step is checked *before* the optimizer touches the weights, so a failing step can be
replayed exactly. On the first non-finite value the doctor names the step, the layer, the
phase (forward, backward, or the update) and whether it is inf or NaN, replays that one step
operator by operator (``replay``), says whether the loss grew geometrically before, and keeps
the last finite statistics of every layer.
"""

import math
import time
from collections.abc import Callable

import torch

from stability.train.doctor.diagnosis import INF, NAN, Diagnosis, geometric_growth
from stability.train.doctor.replay import replay
from stability.train.doctor.watch import ACT_MAX, CHECKED, Watch, last_finite, locate
from stability.train.trainer import TrainConfig, Trainer


class Doctor:
    """Runs a trainer step by step under a ``Watch`` and diagnoses the first non-finite value."""

    def __init__(self, trainer: Trainer, layers: bool = True) -> None:
        self.trainer = trainer
        self.layers = layers
        self.replay_seconds = 0.0  # the one-off operator-level replay of a failing step

    def run(self, steps: int | None = None) -> Diagnosis:
        t = self.trainer
        n_steps = t.cfg.steps if steps is None else steps
        losses: list[torch.Tensor] = []
        previous: torch.Tensor | None = None
        weights: torch.Tensor | None = None
        with Watch(t, layers=self.layers) as watch:
            labels = watch.labels
            for step in range(n_steps):
                loss = t.compute(step)
                stats = watch.step_stats(loss)
                losses.append(loss)
                if bool(torch.isfinite(stats[:, CHECKED]).all()):
                    t.apply()
                    weights = watch.weight_max()
                    previous = stats
                    if not bool(torch.isfinite(weights).all()):
                        return self._update_failure(step, losses, weights, labels, stats)
                    continue
                forward_ok = bool(torch.isfinite(stats[:, ACT_MAX]).all())
                if forward_ok and t.scaler.is_enabled():
                    t.apply()  # the scaler sees the inf gradients, skips and backs off
                    weights = watch.weight_max()
                    continue
                return self._failure(step, losses, stats, previous, weights, labels)
        values = [float(v) for v in losses]
        diag = Diagnosis(t.cfg, n_steps, "stable", losses=values, skipped_steps=t.skipped_steps)
        if previous is not None:
            diag.last_finite = last_finite(previous, None, weights, labels, n_steps - 1)
        return diag

    def _failure(
        self,
        step: int,
        losses: list[torch.Tensor],
        stats: torch.Tensor,
        previous: torch.Tensor | None,
        weights: torch.Tensor | None,
        labels: list[str],
    ) -> Diagnosis:
        t = self.trainer
        found = locate(stats, labels)
        assert found is not None
        where, layer, phase, value = found
        kind = NAN if math.isnan(value) else INF
        first_inf, first_nan = (None, None)
        if self.layers:
            started = time.perf_counter()
            first_inf, first_nan = replay(t, step)
            self.replay_seconds = time.perf_counter() - started
        event = first_nan if kind == NAN else first_inf
        if event is not None:
            # The hooks see layer outputs; an inf made inside a layer can be masked by its
            # activation (relu(-inf) = 0) and surface layers later. The op-level replay
            # names the layer whose operator made it: that is the attribution reported.
            where, phase = event.where, event.phase
            layer = (
                labels.index(where) + 1 if where in labels and where.startswith("layer") else None
            )
        values = [float(v) for v in losses]
        grew, factor = geometric_growth(
            values[:-1] if values and not math.isfinite(values[-1]) else values
        )
        diag = Diagnosis(
            t.cfg, step + 1, "diverged", step=step, where=where, layer=layer, phase=phase,
            kind=kind, first_inf=first_inf, first_nan=first_nan, grew_geometrically=grew,
            growth_per_step=factor, skipped_steps=t.skipped_steps, losses=values,
            last_finite=last_finite(stats, previous, weights, labels, step),
        )  # fmt: skip
        if event is not None:
            diag.mechanism, diag.op, diag.detail = event.mechanism, event.op, event.detail
        elif kind == INF:
            diag.mechanism = "inf input"
            diag.detail = "the layer's inputs or weights were already infinite"
        else:
            diag.mechanism = "nan input"
            diag.detail = "the layer's inputs or weights already held NaN"
        if not self.layers:
            diag.detail = "only the loss was watched: the layer cannot be named"
        return diag

    def _update_failure(
        self,
        step: int,
        losses: list[torch.Tensor],
        weights: torch.Tensor,
        labels: list[str],
        stats: torch.Tensor,
    ) -> Diagnosis:
        t = self.trainer
        bad = [i for i, ok in enumerate(torch.isfinite(weights).tolist()) if not ok]
        i = bad[0]
        value = float(weights[i])
        kind = NAN if math.isnan(value) else INF
        values = [float(v) for v in losses]
        grew, factor = geometric_growth(values)
        where = labels[i] if labels else "weights"
        mechanism = "overflow" if kind == INF else "nan in the update"
        detail = f"finite gradients, but the {t.cfg.optimizer} update made the weights {kind}" + (
            " (optimizer state overflowed: inf / inf)" if kind == NAN else ""
        )
        return Diagnosis(
            t.cfg, step + 1, "diverged", step=step, where=where,
            layer=i + 1 if labels else None, phase="update", kind=kind, mechanism=mechanism,
            op=f"{t.cfg.optimizer}.step", detail=detail, grew_geometrically=grew,
            growth_per_step=factor, skipped_steps=t.skipped_steps, losses=values,
            last_finite=last_finite(stats, None, weights, labels, step),
        )  # fmt: skip


def diagnose(
    cfg: TrainConfig,
    layers: bool = True,
    prepare: Callable[[Trainer], None] | None = None,
) -> Diagnosis:
    """Train ``cfg`` under the doctor; ``prepare`` may alter the trainer first (plant a fault)."""
    trainer = Trainer(cfg)
    if prepare is not None:
        prepare(trainer)
    return Doctor(trainer, layers=layers).run()
