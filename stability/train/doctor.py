"""The divergence doctor: where the first NaN or Inf of a training run comes from, and why.

Watching is cheap: one forward hook per layer reduces the layer's output to (max |x|,
mean |x|), a tensor hook does the same for the gradient arriving at that output, and after
backward the weights' gradients are reduced the same way. Nothing is copied; one host sync per
step reads the whole step's statistics (``max |x|`` is inf if any value is, NaN if any value
is, so it doubles as the finiteness check). The step is checked *before* the optimizer
touches the weights, so a failing step can be replayed exactly.

On the first non-finite value the doctor names the step, the layer, the phase (forward,
backward, or the update) and whether it is inf or NaN, then replays that one step under a
dispatch mode that looks at every operator's inputs and outputs, to find the first operator
that made an inf from finite inputs (overflow) or a NaN from non-NaN inputs, and how: 0/0,
inf/inf, 0*inf, inf - inf (including a matmul whose products overflowed with both signs).
It also says whether the loss grew geometrically before (the signature of a too-large
learning rate) and keeps the last finite statistics of every layer.

Gradients are attributed to the layer whose backward computed them: the gradient arriving
at layer ``k``'s output is produced by layer ``k+1`` (or the head, or the loss).
"""

import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.hooks import RemovableHandle

from stability.core.emulation import round_to
from stability.train.trainer import TrainConfig, Trainer

GROWTH_WINDOW = 10  # losses looked at before the failure
GROWTH_MIN_POINTS = 4  # fewer finite losses than this: no growth verdict
GROWTH_MIN_RATIO = 10.0  # the loss grew at least 10x over the window ...
GROWTH_MIN_RISING = 0.8  # ... rising in at least 80 % of its steps
COST_REPEATS = 3
INF = "infinite"  # the first non-finite tensor held inf values only
NAN = "not-a-number"  # it held NaN

# Columns of the per-step statistics matrix: one row per watched layer, one for the loss.
_ACT_MAX, _ACT_MEAN, _GRAD_MAX, _GRAD_MEAN, _WGRAD_MAX = range(5)
_CHECKED = [_ACT_MAX, _GRAD_MAX, _WGRAD_MAX]  # max |x| columns: non-finite iff any value is
_STAT_NAMES = (
    "act_max_abs",
    "act_mean_abs",
    "grad_max_abs",
    "grad_mean_abs",
    "weight_grad_max_abs",
)
_MATMULS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "mv", "addmv", "dot"}
_SUMS = {"add", "add_", "sub", "sub_", "sum", "mean", "cumsum", "rsub"}
_PRODUCTS = {"mul", "mul_"}
_DIVISIONS = {"div", "div_", "true_divide"}
_FACTORIES = {"empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided"}


def _reduce(x: torch.Tensor) -> torch.Tensor:
    """(max |x|, mean |x|) on x's device, without a copy of x; the max propagates inf and NaN.

    The mean may overflow for huge finite values; it is informational, never the check.
    """
    x = x.detach()
    big = torch.linalg.vector_norm(x, math.inf)
    mean = torch.linalg.vector_norm(x, 1) / max(1, x.numel())
    return torch.stack([big, mean]).double()


def _max_abs(x: torch.Tensor) -> torch.Tensor:
    big: torch.Tensor = torch.linalg.vector_norm(x.detach(), math.inf)
    return big.double()


def _params(module: nn.Module) -> list[nn.Parameter]:
    return list(module.parameters())


class Watch:
    """The doctor's light hooks on a trainer's layers (or on nothing but the loss).

    ``layers=False`` watches only the loss: the cheap detector that can say *when* but not
    *where* (the witness of the attribution property).
    """

    def __init__(self, trainer: Trainer, layers: bool = True) -> None:
        self.trainer = trainer
        self.watched = trainer.model.watched() if layers else []
        self.labels = [label for label, _ in self.watched]
        n = len(self.watched)
        self._fwd: list[torch.Tensor | None] = [None] * n
        self._grad: list[torch.Tensor | None] = [None] * n
        self._handles: list[RemovableHandle] = []

    def _on_output(self, i: int, out: torch.Tensor) -> None:
        self._fwd[i] = _reduce(out)
        if out.requires_grad:

            def on_grad(g: torch.Tensor) -> None:
                self._grad[i] = _reduce(g)

            out.register_hook(on_grad)  # type: ignore[no-untyped-call]

    def __enter__(self) -> "Watch":
        for i, (_, module) in enumerate(self.watched):
            self._handles.append(
                module.register_forward_hook(lambda m, a, out, i=i: self._on_output(i, out))
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def step_stats(self, loss: torch.Tensor) -> torch.Tensor:
        """(layers + 1, 5) float64 matrix of this step; the last row is the loss."""
        zero = torch.zeros(2, dtype=torch.float64, device=loss.device)
        rows = []
        for i, (_, module) in enumerate(self.watched):
            fwd = self._fwd[i] if self._fwd[i] is not None else zero
            grad = self._grad[i] if self._grad[i] is not None else zero
            grads = [
                p.grad.detach().abs().amax().double() for p in _params(module) if p.grad is not None
            ]
            wgrad = torch.stack(grads).amax() if grads else zero[0]
            assert fwd is not None and grad is not None
            rows.append(torch.cat([fwd, grad, wgrad.reshape(1)]))
            self._fwd[i] = None
            self._grad[i] = None
        lv = loss.detach().abs().double().reshape(1)
        rows.append(torch.cat([lv, lv, torch.zeros(3, dtype=torch.float64, device=loss.device)]))
        return torch.stack(rows)

    def weight_max(self) -> torch.Tensor:
        """max |w| per watched layer (after an update)."""
        if not self.watched:
            params = list(self.trainer.model.parameters())
            return torch.stack([_max_abs(p) for p in params]).amax().reshape(1)
        return torch.stack(
            [torch.stack([_max_abs(p) for p in _params(m)]).amax() for _, m in self.watched]
        )


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


# -- replay: which operator, and how ----------------------------------------------------


def _tensors(obj: object) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, list | tuple):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _has(ts: Iterable[torch.Tensor], pred: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    return any(bool(pred(t).any()) for t in ts)


def _max_finite(ts: Iterable[torch.Tensor]) -> float:
    best = 0.0
    for t in ts:
        a = t.detach().abs()
        a = a[torch.isfinite(a)]
        if a.numel():
            best = max(best, float(a.amax()))
    return best


def _classify_nan(
    name: str, ins: list[torch.Tensor], args: tuple[Any, ...], out: torch.Tensor, in_inf: bool
) -> tuple[str, str]:
    """(mechanism, detail) of a NaN made by operator ``name`` from non-NaN inputs."""
    if name in _DIVISIONS:
        a = args[0]
        b = args[1] if len(args) > 1 else None
        if isinstance(a, torch.Tensor) and b is not None:
            bt = b if isinstance(b, torch.Tensor) else torch.tensor(float(b))
            if bool(((a == 0) & (bt == 0)).any()):
                return "0 / 0", "a zero numerator divided by a zero denominator"
            if bool((torch.isinf(a) & torch.isinf(bt)).any()):
                return "inf / inf", "both numerator and denominator overflowed"
    if name in _PRODUCTS:
        return "0 * inf", "an infinite factor met a zero factor"
    if name in _SUMS:
        return "inf - inf", "infinities of opposite sign were added"
    if name in _MATMULS:
        mats = [t for t in ins if t.dim() == 2]
        if len(mats) >= 2 and out.dim() == 2:
            m1, m2 = mats[-2], mats[-1]
            i, j = (int(v) for v in torch.isnan(out).nonzero()[0])
            terms = m1[i, :] * m2[:, j]  # the products in the operator's own dtype
            if bool(torch.isnan(terms).any()):
                return "0 * inf", f"output ({i}, {j}): an infinite entry met a zero entry"
            pos, neg = bool((terms == math.inf).any()), bool((terms == -math.inf).any())
            if pos and neg:
                why = "inputs held inf" if in_inf else "finite products overflowed"
                return "inf - inf", f"output ({i}, {j}): +inf and -inf products summed ({why})"
            return "inf - inf", f"output ({i}, {j}): partial sums overflowed with both signs"
    if in_inf:
        return "0 * inf or inf - inf", f"an inf input inside {name} gave NaN"
    return "invalid", f"{name} of finite inputs gave NaN (0/0-like or out of domain)"


class _FirstNonFinite(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Record the first operator that makes an inf from finite inputs, and the first NaN."""

    def __init__(self, context: list[tuple[str, str]]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.context = context  # [(where, phase)], mutated by the replay's hooks
        self.first_inf: OpEvent | None = None
        self.first_nan: OpEvent | None = None

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        ins = _tensors(args) + _tensors(kwargs)
        scan = self.first_nan is None and bool(ins) and name not in _FACTORIES
        mutable = bool(func._schema.is_mutable)
        if scan:  # judge inputs before the call: in-place operators overwrite them
            in_nan = _has(ins, torch.isnan)
            in_inf = _has(ins, torch.isinf)
            biggest = _max_finite(ins) if mutable and not in_inf else math.nan
        out = func(*args, **kwargs)
        if not scan:
            return out
        outs = _tensors(out)
        where, phase = self.context[-1]
        if self.first_inf is None and not (in_inf or in_nan) and _has(outs, torch.isinf):
            if math.isnan(biggest):
                biggest = _max_finite(ins)
            dtype = outs[0].dtype
            limit = torch.finfo(dtype).max
            dname = str(dtype).replace("torch.", "")
            self.first_inf = OpEvent(
                where,
                phase,
                name,
                "overflow",
                f"finite inputs (max |x| {biggest:.3g}) gave inf in {dname} (max {limit:.3g})",
            )
        if not in_nan and _has(outs, torch.isnan):
            nan_out = next(t for t in outs if bool(torch.isnan(t).any()))
            mechanism, detail = _classify_nan(name, ins, args, nan_out, in_inf)
            self.first_nan = OpEvent(where, phase, name, mechanism, detail)
            raise _Found  # nothing later in the step can change the verdict
        return out


class _Found(Exception):
    """Ends a replay early, once the first NaN is classified."""


def replay(trainer: Trainer, step: int) -> tuple[OpEvent | None, OpEvent | None]:
    """Rerun ``step`` (forward, loss, backward) under ``_FirstNonFinite``; weights untouched."""
    watched = trainer.model.watched()
    context: list[tuple[str, str]] = [("input", "forward")]
    handles: list[RemovableHandle] = []
    after = [label for label, _ in watched[1:]] + ["loss"]
    for i, (label, module) in enumerate(watched):

        def pre(m: nn.Module, a: Any, label: str = label) -> None:
            context.append((label, "forward"))

        def post(m: nn.Module, a: Any, out: torch.Tensor, i: int = i, label: str = label) -> None:
            context.append((after[i], "forward"))
            if out.requires_grad:

                def on_grad(g: torch.Tensor) -> None:
                    context.append((label, "backward"))

                out.register_hook(on_grad)  # type: ignore[no-untyped-call]

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    trainer.optimizer.zero_grad(set_to_none=True)
    mode = _FirstNonFinite(context)
    try:
        with trainer.half_weights(), mode:
            loss = trainer.forward_loss(step)
            context.append(("loss", "backward"))
            trainer.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            if trainer.mode == "emulated":
                for label, module in watched:
                    context.append((label, "backward"))
                    for p in module.parameters():
                        if p.grad is not None:
                            p.grad.copy_(round_to(p.grad, trainer.dtype.dtype))
    except Exception:
        # _Found, possibly re-raised by the autograd engine as another type during backward.
        if mode.first_nan is None:
            raise
    finally:
        for h in handles:
            h.remove()
        trainer.optimizer.zero_grad(set_to_none=True)
    return mode.first_inf, mode.first_nan


# -- the doctor ---------------------------------------------------------------------------


def _locate(stats: torch.Tensor, labels: list[str]) -> tuple[str, int | None, str, float] | None:
    """First non-finite entry of a step matrix in execution order: (where, layer, phase, value)."""
    finite = torch.isfinite(stats).tolist()
    values = stats.tolist()
    n = len(labels)
    for i in range(n):  # forward: layers in order, then the loss
        if not finite[i][_ACT_MAX]:
            return labels[i], i + 1, "forward", values[i][_ACT_MAX]
    if not finite[n][_ACT_MAX]:
        return "loss", None, "forward", values[n][_ACT_MAX]
    if n and not finite[n - 1][_GRAD_MAX]:  # gradient at the head's output: made by the loss
        return "loss", None, "backward", values[n - 1][_GRAD_MAX]
    for j in range(n - 1, -1, -1):  # backward: layers in reverse
        if not finite[j][_WGRAD_MAX]:
            return labels[j], j + 1, "backward", values[j][_WGRAD_MAX]
        if j >= 1 and not finite[j - 1][_GRAD_MAX]:
            return labels[j], j + 1, "backward", values[j - 1][_GRAD_MAX]
    return None


def _last_finite(
    current: torch.Tensor,
    previous: torch.Tensor | None,
    weights: torch.Tensor | None,
    labels: list[str],
    step: int,
) -> pd.DataFrame:
    """Per layer, the latest finite statistics: this step's where finite, else the last step's."""
    rows = []
    cur = current.tolist()
    prev = previous.tolist() if previous is not None else None
    wmax = weights.tolist() if weights is not None and len(labels) else [math.nan] * len(labels)
    for i, label in enumerate(labels):
        row: dict[str, Any] = {"layer": i + 1, "where": label}
        for k, name in enumerate(_STAT_NAMES):
            value, at = cur[i][k], int(step)
            at_opt: int | None = at
            if not math.isfinite(value):
                value, at_opt = (prev[i][k], step - 1) if prev is not None else (math.nan, None)
            row[name] = value
            row[f"{name}_step"] = at_opt
        row["weight_max_abs"] = wmax[i]
        rows.append(row)
    return pd.DataFrame(rows)


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
                if bool(torch.isfinite(stats[:, _CHECKED]).all()):
                    t.apply()
                    weights = watch.weight_max()
                    previous = stats
                    if not bool(torch.isfinite(weights).all()):
                        return self._update_failure(step, losses, weights, labels, stats)
                    continue
                forward_ok = bool(torch.isfinite(stats[:, _ACT_MAX]).all())
                if forward_ok and t.scaler.is_enabled():
                    t.apply()  # the scaler sees the inf gradients, skips and backs off
                    weights = watch.weight_max()
                    continue
                return self._failure(step, losses, stats, previous, weights, labels)
        values = [float(v) for v in losses]
        diag = Diagnosis(t.cfg, n_steps, "stable", losses=values, skipped_steps=t.skipped_steps)
        if previous is not None:
            diag.last_finite = _last_finite(previous, None, weights, labels, n_steps - 1)
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
        found = _locate(stats, labels)
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
            last_finite=_last_finite(stats, previous, weights, labels, step),
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
            last_finite=_last_finite(stats, None, weights, labels, step),
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


# -- cost against torch.autograd.detect_anomaly -----------------------------------------


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


def diagnosis_tables(diag: Diagnosis) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one-row verdict, per-layer last finite statistics with the config's fields)."""
    verdict = pd.DataFrame([diag.as_row()])
    layers = diag.last_finite.copy()
    for key, value in diag.config.as_dict().items():
        layers[key] = value
    return verdict, layers
