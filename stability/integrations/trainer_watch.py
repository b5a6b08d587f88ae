"""The watch inside someone else's training loop: what the trainer callbacks share.

A trainer owns the loop, so the callbacks cannot raise from inside a forward hook (the
Trainer's own bookkeeping would be cut off half way) and must act at the one moment that
matters: after the last backward of an optimizer step, before the step. ``TrainerWatch``
therefore records and attributes as ``watch`` does but acts on nothing itself
(``defer``); per *optimizer* step (``begin_update``, from the trainer's step-begin hook) it
records the first micro-batch every ``every`` steps, files rows under the trainer's global
step, and says whether this step went non-finite (``bad_update``). ``skip_update`` then
drops every gradient (``p.grad = None``): torch's optimizers skip a parameter without one,
so the bad update is never applied, as a GradScaler skips an overflowed step.
"""

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from stability.errors import StabilityError
from stability.integrations.scalars import Rows, scalars
from stability.integrations.watch import NonFiniteError, NonFiniteWarning, Watch
from stability.train.attribution import Attribution

# stop: skip the bad step and end training (a warning says where); raise: skip it and raise
# NonFiniteError out of the trainer's fit; warn: skip it, warn once, train on.
ON_NONFINITE = ("stop", "raise", "warn")


class TrainerWatch(Watch):
    """``Watch`` driven by a trainer's optimizer steps; see the module docstring."""

    defer = True

    def __init__(
        self, model: nn.Module, every: int, modules: Sequence[str] | None,
        precision: str | None, ranks: str, stats: Sequence[str],
        formats: Sequence[str] | None = None, recipe: str | Sequence[str] = "tensor",
    ) -> None:  # fmt: skip
        super().__init__(model, every, "raise", modules, precision, None, ranks, stats,
                         formats, recipe)  # fmt: skip
        self.update = 0  # the trainer's global step (optimizer steps applied so far)
        self._armed = False
        self._bad_at_begin = 0
        self.stats = tuple(stats)
        self.fresh: dict[str, float] = {}  # the last recorded step's scalars, until logged
        self.sinks.append(self._collect)
        if self.formats is not None:  # the fp8 figures join the same logged scalars
            self.formats.sinks.append(lambda step, values: self.fresh.update(values))
        self.phases: set[str] = set()  # the phases that went non-finite in this update
        self.scaler_skips = 0  # backward-only overflows left to a GradScaler

    def begin_update(self, update: int) -> None:
        """The trainer starts optimizer step ``update``: record its first micro-batch if due."""
        self.update = update
        self._armed = update % self.every == 0
        self._bad_at_begin = self.nonfinite_steps
        self.phases = set()
        self._prepare_next()

    def bad_update(self) -> bool:
        """Whether a micro-batch of this optimizer step held an inf or NaN (on any rank)."""
        return self.nonfinite_steps > self._bad_at_begin

    def scaler_overflow(self, scaler: Any) -> bool:
        """Under a ``GradScaler`` (float16), a step whose forward was finite and only its scaled
        gradients overflowed is the scaler's to skip (and back its scale off), not an alarm:
        counted, and forgotten, so that the next real one is attributed afresh."""
        if scaler is None or self.phases != {"backward"}:
            return False
        self.scaler_skips += 1
        if self.first is not None and self.first.step == self.update:
            self.first = None
            if self.sync is not None:
                self.sync.agreed = None
        return True

    def _agree(self) -> None:
        """DDP: a rank that saw nothing itself takes the agreed event's phase, so every rank
        makes the same choice (act, or leave it to the GradScaler) before the step."""
        mine = self._bad_now
        super()._agree()
        if not mine and self._agreed_now is not None:
            self.phases.add(self._agreed_now.attribution.phase)

    def _alarm(self, step: int, phase: str, bad_parameter: str | None) -> None:
        self.phases.add(phase)
        super()._alarm(step, phase, bad_parameter)

    def _records_next(self) -> bool:
        return self._armed

    def _recorded(self) -> None:
        self._armed = False

    def _label(self, call: int) -> int:
        return self.update

    def _fire(self, step: int, found: Attribution) -> None:
        """Acted on by the callback, before the optimizer step."""

    def _collect(self, step: int, rows: Rows) -> None:
        self.fresh = scalars(rows, self.stats)

    def take_scalars(self) -> dict[str, float]:
        """The scalars recorded since the last call (``{}`` if none), for the trainer's logger."""
        self._harvest()
        out, self.fresh = self.fresh, {}
        return out


def check_mode(on_nonfinite: str) -> str:
    if on_nonfinite not in ON_NONFINITE:
        raise StabilityError(
            f"unknown on_nonfinite {on_nonfinite!r}; valid choices: {list(ON_NONFINITE)}"
        )
    return on_nonfinite


def skip_update(model: nn.Module) -> None:
    """Drop every gradient: the optimizer's next step leaves every parameter as it is."""
    for p in model.parameters():
        p.grad = None


def act(watch: TrainerWatch, on_nonfinite: str, model: nn.Module, warned: bool) -> bool:
    """Before an optimizer step that went non-finite: skip it, then raise or warn (the first
    time). Returns whether training should stop."""
    skip_update(model)
    first = watch.first
    assert first is not None
    error = NonFiniteError(first.step, first.attribution)
    if on_nonfinite == "raise":
        raise error
    if not warned:
        what = "training stopped" if on_nonfinite == "stop" else "training goes on"
        warnings.warn(NonFiniteWarning(f"{error}; the step was skipped, {what}"), stacklevel=3)
    return on_nonfinite == "stop"


def write_report(
    watch: TrainerWatch, directory: str | Path | None, name: str | None
) -> Path | None:
    """The watch report page in ``directory`` (the trainer's output directory), if named."""
    if name is None or directory is None:
        return None
    return watch.report(Path(directory) / name)


def scalars_of(watch: Any) -> dict[str, float]:
    """The fresh scalars of a watch that may not have started (``{}`` then)."""
    return watch.take_scalars() if isinstance(watch, TrainerWatch) else {}
