"""``StabilityCallback`` for PyTorch Lightning: watch statistics and the first inf/NaN
attributed, the bad optimizer step never applied.

    from stability.integrations.lightning import StabilityCallback
    trainer = pl.Trainer(max_steps=1000, callbacks=[StabilityCallback(every=10)])

The watch hooks the ``LightningModule`` itself: its ``training_step`` calls ``self(x)``, the
Lightning idiom (``target="net"`` watches a submodule that ``training_step`` calls directly
instead). Every ``every`` optimizer steps the first micro-batch records each module's
statistics; every micro-batch is checked for inf/NaN. ``on_before_optimizer_step`` runs
inside ``optimizer.step(closure)`` after the closure's backward and before the update:
there the gradients of a non-finite step are dropped (torch's optimizers skip a parameter
without one), and training stops (``"stop"``, ``trainer.should_stop``, a
``NonFiniteWarning``), raises ``NonFiniteError`` out of ``fit`` (``"raise"``) or goes on
(``"warn"``). Scalars go to every logger of the trainer (``log_metrics`` at the global
step); the report page is written to ``trainer.default_root_dir`` at the end.

``torch.compile``: with ``self.net = torch.compile(net)`` and ``target="net"`` the compiled
network runs between recording steps, recording steps run it eagerly and the attribution
replays it eagerly (``integrations.eager``). ``trainer.fit(torch.compile(module))`` compiles
``training_step`` itself, with the watch's hooks inside the graph: the callback says so in
one warning and trains the module uncompiled.
``formats=`` / ``recipe=``: each recorded step's fp8 / MX figures, as ``stability.watch``
takes them (``integrations.watch_formats``), in ``watch.formats_frame()`` and the scalars.
pytorch_lightning is imported only here (the ``[lightning]`` extra).
"""

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stability.errors import StabilityError
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
    import pytorch_lightning as pl
except ImportError as err:  # pragma: no cover - the extra is missing
    raise StabilityError(
        "stability.integrations.lightning needs pytorch-lightning: "
        "pip install 'stability[lightning]'"
    ) from err

REPORT = "stability-watch.html"
COMPILED = (
    "stability: a compiled LightningModule is one graph that hooks cannot see into; training "
    "it uncompiled (compile the network inside it and pass target= to keep compiling)"
)


class StabilityCallback(pl.Callback):
    """See the module docstring; ``watch`` holds the history once training has begun."""

    def __init__(
        self,
        every: int = 10,
        on_nonfinite: str = "stop",
        modules: Sequence[str] | None = None,
        precision: str | None = None,
        report: str | None = REPORT,
        target: str | None = None,
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
        self.target = target
        self.watch: TrainerWatch | None = None
        self.skipped: list[int] = []
        self.report_path: Path | None = None
        self._update = -1

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        every, modules, precision, ranks, stats = self.options
        if self.target is None and getattr(pl_module, "_compiler_ctx", None):
            from pytorch_lightning.utilities.compile import to_uncompiled

            warnings.warn(COMPILED, stacklevel=2)
            to_uncompiled(pl_module)
        model = pl_module if self.target is None else pl_module.get_submodule(self.target)
        self.watch = TrainerWatch(model, every, modules, precision, ranks, stats, *self.lowp)
        self.watch.__enter__()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
        # Called per micro-batch: a new optimizer step begins when the global step moved.
        if self.watch is not None and trainer.global_step != self._update:
            self._update = trainer.global_step
            self.watch.begin_update(trainer.global_step)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        w = self.watch
        if w is None or not w.bad_update():
            return
        if w.scaler_overflow(getattr(trainer.precision_plugin, "scaler", None)):
            return  # 16-mixed: the GradScaler skips this step and backs off
        self.skipped.append(trainer.global_step)
        try:
            stop = act(w, self.on_nonfinite, pl_module, warned=len(self.skipped) > 1)
        except Exception:
            self._close(trainer)
            raise
        if stop:
            trainer.should_stop = True

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        fresh = scalars_of(self.watch)
        if fresh:
            for logger in trainer.loggers:
                logger.log_metrics(fresh, step=self._update)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._close(trainer)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._close(trainer)

    def _close(self, trainer: Any) -> None:
        if self.watch is None or not self.watch._handles:
            return
        self.watch.__exit__(None, None, None)
        self.report_path = write_report(self.watch, trainer.default_root_dir, self.report)
