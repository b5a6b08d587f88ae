"""The doctor's MLP trained in emulated fp8: the usual diagnosis plus what fp8 lost per step.

The trainer runs in its float32 carrier with ``core.lowp.training.Fp8Training`` on the
network (every Linear of the body and the head; HYBRID: E4M3 forward, E5M2 backward, under
the recipe), so the divergence doctor watches, replays and names exactly as it does for any
dtype, and the per-step, per-module fp8 events come back beside its verdict.
"""

from typing import Any

from stability.core.lowp.training import Fp8Training
from stability.train.doctor.diagnosis import Diagnosis
from stability.train.doctor.run import Doctor
from stability.train.trainer import TrainConfig, Trainer


def diagnose_fp8(
    cfg: TrainConfig, recipe: str = "tensor", fmt: str = "hybrid"
) -> tuple[Diagnosis, list[dict[str, Any]]]:
    """Train ``cfg`` (a float32 config: the carrier) under fp8; (diagnosis, fp8 rows)."""
    trainer = Trainer(cfg)
    with Fp8Training(trainer.model, fmt, recipe) as emu:
        diag = Doctor(trainer).run()
    return diag, emu.rows(steps=diag.steps_run)
