"""``StabilityCallback`` for the Hugging Face ``Trainer``: watch statistics and the first
inf/NaN attributed, the bad optimizer step never applied.

    from stability.integrations.hf import StabilityCallback
    trainer = Trainer(model=model, args=args, train_dataset=data)
    StabilityCallback(every=10).attach(trainer)
    trainer.train()

Every ``every`` optimizer steps the first micro-batch records each module's statistics, as
``stability.watch`` does (tuple, dict and ``ModelOutput`` outputs included). Every
micro-batch is checked for inf/NaN; at the first one the failing call is replayed and the
module, phase and operator named. In ``on_pre_optimizer_step`` (after the gradients are
clipped, before ``optimizer.step()``) the step's gradients are dropped, so the update is
not applied, and training stops (``on_nonfinite="stop"``, with a ``NonFiniteWarning``),
raises ``NonFiniteError`` out of ``trainer.train()`` (``"raise"``) or goes on (``"warn"``).

Scalars (``stability/<stat>/<module>``, ``integrations.scalars``) join the Trainer's own
``logs`` at its next log event, so they reach every ``report_to`` integration (TensorBoard,
W&B, ...) that runs after this callback: ``attach(trainer)`` puts it first;
``Trainer(callbacks=[...])`` puts it after the reporters, which then miss them (they are
still in ``state.log_history``). The report page is written to ``args.output_dir`` at the
end. Under ``torch_compile=True`` (with ``attach``) the compiled module the Trainer calls is
hooked from outside its graph: recording steps run the eager model, the others the graph,
and the attribution replays the failing call eagerly (``integrations.eager``). Under
``bf16=True`` the Trainer's autocast covers the replay too (it runs inside the
same forward). Under ``fp16=True`` a step whose forward was finite and whose scaled
gradients overflowed is left to the GradScaler (``watch.scaler_skips``), as it should be.
``formats=`` / ``recipe=``: each recorded step's fp8 / MX figures, as ``stability.watch``
takes them (``integrations.watch_formats``), in ``watch.formats_frame()`` and the scalars.
transformers is imported only here (the ``[hf]`` extra).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stability.errors import StabilityError
from stability.integrations.eager import is_compiled
from stability.integrations.scalars import LOGGED, check_stats
from stability.integrations.trainer_watch import (
    TrainerWatch,
    act,
    check_mode,
    scalars_of,
    write_report,
)
from stability.integrations.watch_formats import check_formats

try:
    from transformers import TrainerCallback
except ImportError as err:  # pragma: no cover - the extra is missing
    raise StabilityError(
        "stability.integrations.hf needs transformers: pip install 'stability[hf]'"
    ) from err

REPORT = "stability-watch.html"


class StabilityCallback(TrainerCallback):
    """See the module docstring; ``watch`` holds the history once training has begun."""

    def __init__(
        self,
        every: int = 10,
        on_nonfinite: str = "stop",
        modules: Sequence[str] | None = None,
        precision: str | None = None,
        report: str | None = REPORT,
        ranks: str = "reduce",
        stats: Sequence[str] = LOGGED,
        formats: Sequence[str] | None = None,
        recipe: str | Sequence[str] = "tensor",
    ) -> None:
        self.options = (every, modules, precision, ranks, check_stats(stats))
        if formats is not None:
            check_formats(formats, recipe)  # a bad name fails here, not at the first step
        self.lowp = (formats, recipe)
        self.on_nonfinite = check_mode(on_nonfinite)
        self.report = report
        self.watch: TrainerWatch | None = None
        self.skipped: list[int] = []  # the global steps whose update was not applied
        self.report_path: Path | None = None
        self._trainer: Any = None

    def attach(self, trainer: Any) -> "StabilityCallback":
        """Put this callback first in ``trainer``'s handler (its scalars reach the reporters)."""
        trainer.callback_handler.callbacks.insert(0, self)
        self._trainer = trainer
        return self

    # -- Trainer events ----------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        every, modules, precision, ranks, stats = self.options
        model = kw["model"]
        if getattr(args, "torch_compile", False) and self._trainer is None:
            raise StabilityError(
                "StabilityCallback under torch_compile=True needs attach(trainer): callbacks "
                "are not given the compiled module the Trainer calls"
            )
        wrapped = getattr(self._trainer, "model_wrapped", None)
        if wrapped is not None and wrapped is not model and is_compiled(wrapped):
            # torch_compile=True: hook the compiled module the Trainer calls, so the checks
            # run outside its graph and recording steps run the eager model.
            model = wrapped
        self.watch = TrainerWatch(model, every, modules, precision, ranks, stats, *self.lowp)
        self.watch.__enter__()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.watch is not None:
            self.watch.begin_update(state.global_step)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        w = self.watch
        if w is None or not w.bad_update():
            return
        if w.scaler_overflow(getattr(kw.get("optimizer"), "scaler", None)):
            return  # fp16: accelerate's GradScaler skips this step and backs off
        self.skipped.append(state.global_step)
        try:
            stop = act(w, self.on_nonfinite, w.model, warned=len(self.skipped) > 1)
        except Exception:
            self._close(args)
            raise
        if stop:
            control.should_training_stop = True

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        fresh = scalars_of(self.watch)
        if fresh and logs is not None:
            logs.update(fresh)
            if state.log_history:
                state.log_history[-1].update(fresh)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._close(args)

    def _close(self, args: Any) -> None:
        if self.watch is None or not self.watch._handles:
            return
        self.watch.__exit__(None, None, None)
        self.report_path = write_report(self.watch, args.output_dir, self.report)
