"""What the doctor costs against ``torch.autograd.detect_anomaly`` on the same run.

Both watch for the first non-finite value; the doctor does it with one host sync per step
and a one-off replay, detect_anomaly by checking every backward operator. Timing is noisy on
shared machines, so the three variants are interleaved and the minimum kept.
"""

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from stability.train.doctor.run import Doctor, diagnose
from stability.train.trainer import TrainConfig, Trainer

COST_REPEATS = 3


@dataclass(frozen=True)
class CostComparison:
    """Seconds for the same steps: plain loop, the doctor, ``detect_anomaly``; best of repeats."""

    steps: int
    plain_s: float
    doctor_s: float  # everything: watching every step plus the replay of the failing one
    replay_s: float  # the replay alone (once per run, whatever its length)
    anomaly_s: float
    anomaly_caught_step: int | None  # the step where detect_anomaly raised, if it did
    anomaly_message: str
    repeats: int

    @property
    def ratio(self) -> float:
        """The doctor's cost over detect_anomaly's (< 1: the doctor is cheaper)."""
        return self.doctor_s / self.anomaly_s

    @property
    def watch_ratio(self) -> float:
        """The per-step watching alone over detect_anomaly (the replay is a fixed cost)."""
        return (self.doctor_s - self.replay_s) / self.anomaly_s

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "watch_ratio": self.watch_ratio}


def _plain(trainer: Trainer, steps: int) -> None:
    for i in range(steps):
        if not math.isfinite(float(trainer.step(i))):
            return


def _anomaly(trainer: Trainer, steps: int) -> tuple[int | None, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anomaly mode warns on enable and on every error
        with torch.autograd.detect_anomaly(check_nan=True):
            for i in range(steps):
                try:
                    loss = trainer.step(i)
                except RuntimeError as exc:
                    return i, str(exc).splitlines()[0]
                if not math.isfinite(float(loss)):
                    return None, f"no anomaly raised; loss not finite at step {i}"
    return None, "no anomaly raised"


def compare_cost(
    cfg: TrainConfig,
    prepare: Callable[[Trainer], None] | None = None,
    repeats: int = COST_REPEATS,
) -> CostComparison:
    """Time the doctor and ``detect_anomaly`` on the same run, up to the doctor's failing step.

    Each repetition builds fresh trainers (not timed) and times only the steps; the three
    variants are interleaved so that machine noise hits them alike; the minimum is kept.
    """
    first = diagnose(cfg, prepare=prepare)
    steps = first.step + 1 if first.step is not None else first.steps_run
    run_cfg = replace(cfg, steps=steps)

    def fresh() -> Trainer:
        trainer = Trainer(run_cfg)
        if prepare is not None:
            prepare(trainer)
        return trainer

    plain, doctor, replays, anomaly = [], [], [], []
    caught: tuple[int | None, str] = (None, "")
    for _ in range(max(1, repeats)):
        tr = fresh()
        t0 = time.perf_counter()
        _plain(tr, steps)
        plain.append(time.perf_counter() - t0)
        tr = fresh()
        doc = Doctor(tr)
        t0 = time.perf_counter()
        doc.run(steps)
        doctor.append(time.perf_counter() - t0)
        replays.append(doc.replay_seconds)
        tr = fresh()
        t0 = time.perf_counter()
        caught = _anomaly(tr, steps)
        anomaly.append(time.perf_counter() - t0)
    best = doctor.index(min(doctor))
    return CostComparison(
        steps, min(plain), doctor[best], replays[best], min(anomaly), caught[0], caught[1], repeats
    )
