"""What the doctor found in one run, and how it reads: the verdict, the cause, the advice.

A ``Diagnosis`` is a plain record (one flat row for the store and CSV); ``summary()`` and
``advice()`` turn it into the lines a person reads. ``geometric_growth`` tells a slow
blow-up (a too-large learning rate) from a sudden one.
"""

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from stability.train.trainer import TrainConfig

GROWTH_WINDOW = 10  # losses looked at before the failure
GROWTH_MIN_POINTS = 4  # fewer finite losses than this: no growth verdict
GROWTH_MIN_RATIO = 10.0  # the loss grew at least 10x over the window ...
GROWTH_MIN_RISING = 0.8  # ... rising in at least 80 % of its steps
INF = "infinite"  # the first non-finite tensor held inf values only
NAN = "not-a-number"  # it held NaN


@dataclass(frozen=True)
class OpEvent:
    """The first operator that produced an inf (from finite inputs) or a NaN (from non-NaN)."""

    where: str  # "layer 3", "head", "loss", ...
    phase: str  # "forward" or "backward"
    op: str  # aten operator name
    mechanism: str  # overflow, 0 / 0, inf / inf, 0 * inf, inf - inf, invalid, ...
    detail: str

    def line(self) -> str:
        return f"{self.op} in {self.where} ({self.phase}): {self.mechanism}; {self.detail}"


@dataclass
class Diagnosis:
    """What the doctor found in one run; ``summary()`` is the readable report."""

    config: TrainConfig
    steps_run: int
    status: str  # "stable" or "diverged"
    step: int | None = None
    where: str | None = None  # "layer 3", "head", "loss"; "layer 3" also for its weights
    layer: int | None = None  # 1-based index of the watched layer (head = depth + 1)
    phase: str | None = None  # forward, backward, update
    kind: str | None = None  # INF or NAN (words, so a CSV reader keeps them as text)
    mechanism: str | None = None
    op: str | None = None
    detail: str = ""
    first_inf: OpEvent | None = None
    first_nan: OpEvent | None = None
    grew_geometrically: bool = False
    growth_per_step: float | None = None
    skipped_steps: int = 0
    losses: list[float] = field(default_factory=list)
    last_finite: pd.DataFrame = field(default_factory=pd.DataFrame)

    def as_row(self) -> dict[str, Any]:
        """One flat row for the store and CSV (the config's fields first)."""
        row = self.config.as_dict()
        row.update(
            {
                "status": self.status,
                "steps_run": self.steps_run,
                "step": self.step,
                "where": self.where,
                "layer": self.layer,
                "phase": self.phase,
                "kind": self.kind,
                "mechanism": self.mechanism,
                "op": self.op,
                "detail": self.detail,
                "first_inf": self.first_inf.line() if self.first_inf else None,
                "first_nan": self.first_nan.line() if self.first_nan else None,
                "grew_geometrically": self.grew_geometrically,
                "growth_per_step": self.growth_per_step,
                "skipped_steps": self.skipped_steps,
                "initial_loss": self.losses[0] if self.losses else math.nan,
                "last_loss": self.losses[-1] if self.losses else math.nan,
            }
        )
        return row

    def summary(self) -> str:
        """A few readable lines: the verdict, the cause, the loss history, the advice."""
        c = self.config
        m = c.model
        head = (
            f"config: {m.activation}/{m.init} depth {m.depth} width {m.width} {m.dtype} "
            f"seed {m.seed}; {c.optimizer} lr {c.lr:g}, {c.data} data, batch {c.batch}"
            + (", loss scaling" if c.loss_scaling else "")
        )
        lines = [head]
        if self.status == "stable":
            lines.append(
                f"stable: {self.steps_run} steps, all values finite; loss "
                f"{self.losses[0]:.4g} -> {self.losses[-1]:.4g}"
                + (
                    f" ({self.skipped_steps} steps skipped by the scaler)"
                    if self.skipped_steps
                    else ""
                )
            )
            return "\n".join(lines)
        lines.append(
            f"first non-finite value: step {self.step}, {self.where}, {self.phase}: "
            f"{self.kind} ({self.mechanism})"
        )
        if self.op:
            lines.append(f"  operator: {self.op}; {self.detail}")
        elif self.detail:
            lines.append(f"  {self.detail}")
        if self.first_inf and self.kind == NAN:
            lines.append(f"  before it, the first inf: {self.first_inf.line()}")
        if self.first_nan and self.kind == INF:
            lines.append(f"  NaN follows in the same step: {self.first_nan.line()}")
        if self.grew_geometrically:
            lines.append(
                f"  the loss grew geometrically before: x{self.growth_per_step:.3g} per step "
                f"over the last {min(GROWTH_WINDOW, len(self._finite_losses()))} steps"
            )
        else:
            lines.append("  the loss did not grow geometrically before (not a slow blow-up)")
        lines.append("  advice: " + self.advice())
        return "\n".join(lines)

    def _finite_losses(self) -> list[float]:
        return [v for v in self.losses if math.isfinite(v)]

    def advice(self) -> str:
        """The notes' remedy, specialised: lower lr / init scale, or remove the 0/0."""
        finite = self._finite_losses()
        if self.grew_geometrically or (len(finite) >= 2 and finite[-1] > finite[0]):
            return "lower the learning rate (then raise it again until training progresses)"
        if self.mechanism in ("0 / 0", "invalid"):
            return "a division or invalid operation: guard the denominator (add an eps)"
        if self.phase == "forward" and self.step == 0:
            return "the initial weights are too large: lower the init variance"
        if self.config.model.dtype in ("float16", "bfloat16") and not self.config.loss_scaling:
            return "lower the learning rate or init variance; in float16 check the value range"
        return "lower the learning rate and the init variance until it trains, then raise them"


def geometric_growth(losses: list[float]) -> tuple[bool, float | None]:
    """Did the last ``GROWTH_WINDOW`` finite losses grow geometrically? And by how much per step."""
    window = [v for v in losses if math.isfinite(v)][-GROWTH_WINDOW:]
    if len(window) < GROWTH_MIN_POINTS or window[0] <= 0:
        return False, None
    ratio = window[-1] / window[0]
    factor = ratio ** (1.0 / (len(window) - 1)) if ratio > 0 else 0.0
    rising = sum(b > a for a, b in itertools.pairwise(window)) / (len(window) - 1)
    return bool(ratio >= GROWTH_MIN_RATIO and rising >= GROWTH_MIN_RISING), factor
