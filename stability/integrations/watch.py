"""``stability.watch``: per-module statistics and a non-finite alarm inside the user's own loop.

    with stability.watch(model, every=10) as w:
        for x, y in data:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
    w.to_frame()          # tidy: step, module, stat, value
    w.report("watch.html")

A *step* is one call of ``model`` with gradients enabled (a call under ``torch.no_grad()``,
an evaluation, is neither counted nor watched), so nothing needs to be called by hand and
the counter follows the loop whatever optimizer it uses. Every ``every``-th step, hooks on
each watched module (qualified names) record the probe's statistics of its output and of the
gradient arriving there (``core.probe``). The hooks are registered for that one call only:
on the steps in between the modules carry no hook at all.

The model may be called with tensors, keyword arguments only (``model(**batch)``, as a
Hugging Face model takes its batch) or both, and may return a tensor, tuple, dict,
dataclass or ``ModelOutput``: every floating tensor of a module's output is read
(``core.outputs.tensors_in``) and pooled into its row (``core.pooled_probe``), as
``stability probe`` reads them.

The non-finite alarm runs on every step and costs two reductions: the sum of the model's
output tensors after the forward, and once at the end of backward one fused pass over
every parameter's gradient (``torch._foreach_norm``, queued from the gradient's arrival at
the model's output; one host sync), so it fires before the optimizer's step. A non-finite
sum is confirmed element by element (a finite sum can overflow). On the first non-finite
value the failing call is replayed operator by operator (``train.attribution``, the
doctor's replay) and ``NonFiniteError`` is raised, or ``NonFiniteWarning`` warned, naming
the module, the phase (forward, backward, or an earlier update) and the operator.

Around it: ``integrations.tensorboard`` (``log_to``), ``.eager`` (compiled and DDP models),
``.ranks`` (one alarm for all ranks), ``.trainer_watch`` (the trainer callbacks' subclass).
"""

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from stability.core.outputs import own_loss, tensors_in
from stability.core.pooled_probe import PooledProbe
from stability.core.probe import LayerStats
from stability.errors import StabilityError
from stability.integrations.eager import eager_module, forward_eagerly
from stability.integrations.scalars import LOGGED, Rows, check_stats
from stability.integrations.scalars import STATS as STATS  # re-exported: the watched stats
from stability.integrations.watch_formats import FormatWatch
from stability.integrations.watch_frame import history_frame
from stability.train.attribution import Attribution, all_finite, attribute, is_finite
from stability.usermodel.probe import default_modules as usermodel_defaults

ON_NONFINITE = ("raise", "warn")


class NonFiniteError(FloatingPointError):
    """The first inf or NaN of a watched run, with where it came from (``attribution``)."""

    def __init__(self, step: int, attribution: Attribution) -> None:
        self.step = step
        self.attribution = attribution
        super().__init__(f"first non-finite value at step {step}: {attribution.line()}")


class NonFiniteWarning(RuntimeWarning):
    """``on_nonfinite="warn"``: the same message as ``NonFiniteError``, once per watch."""


@dataclass(frozen=True)
class Event:
    """The first non-finite value seen: the step and the attribution."""

    step: int
    attribution: Attribution


def default_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules ``stability probe`` watches by default (``usermodel.probe``), the model
    itself left out (its output is checked on every step anyway)."""
    by_name = dict(model.named_modules())
    return [(n, by_name[n]) for n in usermodel_defaults(model) if n]


class _NoModel(nn.Module):
    """The probe's model slot: the watch hooks the modules itself and never lets the probe
    substitute an MLP's blocks for the modules it was given."""


class Watch:
    """Hooks on a model for the life of a ``with`` block; see the module docstring.

    ``defer``: the alarm attributes and records, and the caller raises or warns (the trainer
    callbacks before the optimizer step; under DDP every rank at once, ``.ranks``)."""

    defer = False

    def __init__(
        self,
        model: nn.Module,
        every: int = 10,
        on_nonfinite: str = "raise",
        modules: Sequence[str] | None = None,
        precision: str | None = None,
        log_to: Any = None,
        ranks: str = "reduce",
        stats: Sequence[str] = LOGGED,
        formats: str | Sequence[str] | None = None,
        recipe: str | Sequence[str] = "tensor",
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise StabilityError(f"every must be an integer >= 1, got {every!r}")
        if on_nonfinite not in ON_NONFINITE:
            raise StabilityError(
                f"unknown on_nonfinite {on_nonfinite!r}; valid choices: {list(ON_NONFINITE)}"
            )
        stats = check_stats(stats)
        self.outer = model  # what the user calls: possibly compiled or DDP-wrapped
        model = eager_module(model)  # its eager modules: hooked, named and replayed
        self.model = model
        self.every = every
        self.on_nonfinite = on_nonfinite
        named = default_modules(model)
        if modules is not None:
            by_name = dict(model.named_modules())
            unknown = [n for n in modules if n not in by_name or not n]
            if unknown:
                raise StabilityError(
                    f"unknown module {unknown[0]!r}; valid choices: {[n for n, _ in named]}"
                )
            named = [(n, by_name[n]) for n in modules]
        if not named:
            raise StabilityError(f"{type(model).__name__} has no submodules to watch")
        self.named = named
        self.formats = FormatWatch.create(model, named, formats, recipe)  # fp8 / MX figures
        self.probe = PooledProbe(_NoModel(), [m for _, m in named], tensors_in, precision)
        self.step = 0  # steps seen so far; the current call's index while it runs
        self.history: list[tuple[int, str, LayerStats]] = []
        self.first: Event | None = None
        self.nonfinite_steps = 0
        self._handles: list[RemovableHandle] = []
        self._module_handles: list[RemovableHandle] = []
        self._active = False  # the current call is a watched step
        self._pending: int | None = None  # a recorded step not yet read into the history
        self._replaying = False
        self._args: tuple[Any, ...] = ()
        self._kwargs: dict[str, Any] = {}
        self._rng: torch.Tensor | None = None
        self._grad_out: list[torch.Tensor | None] = []
        self._loss_at: int | None = None  # the index of the model's own loss among its outputs
        self._params: list[tuple[str, torch.Tensor]] = []
        self._queued = False
        self._bad_now = False  # the current call (forward or backward) held a non-finite
        self._agreed_now: Event | None = None  # DDP: this step's agreed event, if any
        self.sinks: list[Callable[[int, Rows], None]] = []
        if log_to is not None:
            from stability.integrations.tensorboard import TensorBoardSink

            self.sinks.append(TensorBoardSink(log_to, stats, self.formats))
        from stability.integrations.ranks import RankSync

        self.sync = RankSync.create(ranks)  # None outside torch.distributed
        if self.sync is not None:
            self.defer = True

    # -- the context manager ---------------------------------------------------------------
    def __enter__(self) -> "Watch":
        m = self.outer
        self._handles.append(m.register_forward_pre_hook(self._before, with_kwargs=True))
        self._handles.append(m.register_forward_hook(self._after))
        self._params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self._prepare_next()
        return self

    def __exit__(self, *exc: object) -> None:
        for h in [*self._handles, *self._module_handles]:
            h.remove()
        self._handles.clear()
        self._module_handles.clear()
        forward_eagerly(self.outer, False)
        self._harvest()
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                close()

    # -- what a subclass changes -----------------------------------------------------------
    def _records_next(self) -> bool:
        """Whether the next call (index ``self.step``) records statistics."""
        return self.step % self.every == 0

    def _recorded(self) -> None:
        """Called once a call has started recording (the trainers disarm here)."""

    def _label(self, call: int) -> int:
        """The step a call is filed under: its index (the trainers: their global step)."""
        return call

    def _prepare_next(self) -> None:
        """A compiled model's next call runs its eager module if it records (``.eager``)."""
        forward_eagerly(self.outer, self._records_next())

    # -- hooks -----------------------------------------------------------------------------
    def _before(self, m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._active = not self._replaying and torch.is_grad_enabled()
        if not self._active:
            return
        self._harvest()
        self._args, self._kwargs = args, kwargs
        self._rng = torch.get_rng_state()
        self._grad_out = []
        self._queued = False  # a backward that died before its callback queued nothing now
        self._bad_now = False
        if self._records_next():
            self._recorded()
            self.probe._on_model_forward()  # every=1: records this pass, clears the last
            self._pending = self._label(self.step)
            for i, (_, module) in enumerate(self.named):
                self._module_handles.append(
                    module.register_forward_hook(
                        lambda mod, a, out, i=i: self.probe._on_output(i, out)
                    )
                )
            self._module_handles.extend(self.formats.attach() if self.formats else ())

    def _after(self, m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if not self._active:
            return
        for h in self._module_handles:  # tensor hooks on the outputs stay for backward
            h.remove()
        self._module_handles.clear()
        outs = tensors_in(out)
        loss = own_loss(out)
        self._loss_at = next((i for i, t in enumerate(outs) if t is loss), None)
        kept: list[torch.Tensor | None] = [None] * len(outs)
        self._grad_out = kept
        for i, t in enumerate(outs):
            if t.requires_grad:
                t.register_hook(lambda g, i=i: self._keep_grad(kept, i, g))  # type: ignore[no-untyped-call]
        step = self.step
        self.step += 1
        self._prepare_next()
        if all_finite(outs):
            return
        self._alarm(step, "forward", None)

    def _keep_grad(self, kept: list[torch.Tensor | None], i: int, g: torch.Tensor) -> None:
        kept[i] = g  # a reference into its own call's list, no copy: read only if one goes bad
        if not self._queued and not self._replaying:
            # Runs once this backward pass has accumulated every gradient: before the step.
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._after_backward)

    def _after_backward(self) -> None:
        self._queued = False
        grads = [p.grad for _, p in self._params if p.grad is not None]
        if grads and not all_finite(grads, fused=True):
            # Backward runs from the top: the last parameter with a bad gradient is the first.
            bad = next(
                (
                    n
                    for n, p in reversed(self._params)
                    if p.grad is not None and not is_finite(p.grad)
                ),
                None,
            )
            if bad is not None:
                self._alarm(self.step - 1, "backward", bad)
        if self.sync is not None:
            self._agree()
        self._harvest()

    def _agree(self) -> None:
        """DDP: every rank learns whether any rank went non-finite in this step, and all act
        on the lowest such rank's attribution (one small all-reduce per step)."""
        assert self.sync is not None
        agreed = self._agreed_now = self.sync.agree(self._bad_now, self.first)
        if agreed is None:
            return
        if not self._bad_now:
            self.nonfinite_steps += 1  # another rank's
        if self.sync.agreed is not None:
            return  # every rank already holds the first one
        self.sync.agreed = self.first = agreed
        self._fire(agreed.step, agreed.attribution)

    # -- the alarm -------------------------------------------------------------------------
    def _alarm(self, step: int, phase: str, bad_parameter: str | None) -> None:
        if not self._bad_now:  # a step's forward and backward count once
            self.nonfinite_steps += 1
        self._bad_now = True
        if self.first is not None:
            return
        self._replaying = True
        try:
            with torch.enable_grad():
                found = attribute(
                    self.model, self.named, self._args, self._kwargs, phase,
                    grad_outputs=self._replayed_grads() if phase == "backward" else None,
                    rng_state=self._rng, bad_parameter=bad_parameter,
                )  # fmt: skip
        finally:
            self._replaying = False
        self.first = Event(self._label(step), found)
        if not self.defer:
            self._fire(self.first.step, found)

    def _fire(self, step: int, found: Attribution) -> None:
        if self.on_nonfinite == "raise":
            raise NonFiniteError(step, found)
        warnings.warn(NonFiniteWarning(str(NonFiniteError(step, found))), stacklevel=3)

    def _replayed_grads(self) -> list[torch.Tensor | None]:
        """The gradients arriving at the outputs, one per output (None: none arrived). When
        the model's own ``loss`` was the one differentiated, it alone: the other outputs
        (``logits``) lie inside its graph, and their gradients came from it."""
        grads = list(self._grad_out)
        at = self._loss_at
        if at is not None and grads[at] is not None:
            grads = [g if i == at else None for i, g in enumerate(grads)]
        return grads

    def _harvest(self) -> None:
        """Read a recorded step's statistics into the history (once its backward is done);
        a module that did not run in that call (T5's unused ``shared`` embedding) has no row."""
        if self._pending is None:
            return
        step, self._pending = self._pending, None
        ran = set(self.probe.order)
        rows = [
            (name, stats)
            for i, ((name, _), stats) in enumerate(
                zip(self.named, self.probe.results(), strict=True)
            )
            if i in ran
        ]
        if self.sync is not None:
            rows = self.sync.reduce(rows)
        self.history.extend((step, name, stats) for name, stats in rows)
        for sink in self.sinks:
            sink(step, rows)
        if self.formats is not None:
            self.formats.harvest(step)

    # -- results ---------------------------------------------------------------------------
    def to_frame(self, wide: bool = False) -> pd.DataFrame:
        """The history, tidy: a row per (step, module that ran, stat) with its ``value``, in
        forward-hook order; ``wide=True``: a row per (step, module), a column per stat."""
        self._harvest()
        return history_frame(self.history, [name for name, _ in self.named], wide)

    def formats_frame(self) -> pd.DataFrame:
        """``formats=``: a row per (step, module, format, recipe, tensor); ``.watch_formats``."""
        self._harvest()
        return pd.DataFrame() if self.formats is None else self.formats.frame()

    def report(self, path: str | Path) -> Path:
        """A self-contained HTML page of the history and the first non-finite value."""
        from stability.integrations.watch_report import write_watch_report  # matplotlib: slow

        modules = [name for name, _ in self.named]
        meta = f"{len(modules)} modules, {self.step} steps, statistics every {self.every} steps"
        title = f"Watched: {type(self.model).__name__}"
        wide, lowp = self.to_frame(wide=True), self.formats_frame()
        return write_watch_report(Path(path), wide, modules, title, meta, self.verdict(), lowp)

    def verdict(self) -> str:
        """One line: finite throughout, or the first non-finite value and where it came from."""
        if self.first is None:
            return f"All values finite over {self.step} steps (statistics every {self.every})."
        return f"First non-finite value at step {self.first.step}: {self.first.attribution.line()}"


def watch(
    model: nn.Module,
    every: int = 10,
    on_nonfinite: str = "raise",
    modules: Sequence[str] | None = None,
    precision: str | None = None,
    log_to: Any = None,
    ranks: str = "reduce",
    formats: str | Sequence[str] | None = None,
    recipe: str | Sequence[str] = "tensor",
) -> Watch:
    """Watch ``model`` inside a ``with`` block: statistics every ``every`` steps, the first
    non-finite value attributed (``on_nonfinite``: ``"raise"`` or ``"warn"``). ``modules``
    names the modules to watch (default: every submodule but plain containers);
    ``precision`` (``"float16"``, ``"bfloat16"``) counts overflow/subnormal/flush fractions.
    ``log_to``: a TensorBoard ``SummaryWriter`` or a log directory, one scalar per module and
    statistic (``integrations.tensorboard``); ``ranks`` under DDP: ``"reduce"`` (statistics
    averaged across ranks) or ``"each"`` (every rank its own). ``formats`` (``["e4m3"]``) and
    ``recipe`` (``"tensor"``, a list): fp8 / MX figures in ``formats_frame()``."""
    return Watch(model, every, on_nonfinite, modules, precision, log_to, ranks,
                 formats=formats, recipe=recipe)  # fmt: skip
