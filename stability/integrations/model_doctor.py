"""The divergence doctor on a user's own model: train it briefly, name the first inf or NaN.

Training is the plain loop a user writes (zero_grad, forward, loss, backward, step) under
``watch`` with statistics on every step, so the first non-finite value is attributed to a
module (qualified name), a phase and an operator by the doctor's replay (``attribution``).
In float16/bfloat16 each step's forward and backward run under emulation
(``core.emulate_model``: AMP's float32 masters, rounded weights, outputs and gradients) and
the parameter gradients are rounded to the dtype, as the MLP trainer does.

The studies reuse the MLP doctor's rules: the lr search brackets and bisects with
``train.lr_search.largest_stable_lr`` on the same divergence rule (``diverged``), each trial
a fresh copy of the model trained ``trial_steps`` steps; loss scaling trains in the reduced
dtype with and without ``train.scaler.LossScaler`` and reports per module the fraction of
parameter gradients that underflowed to zero.
"""

import contextlib
import copy
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from stability.core.emulate_model import emulate
from stability.core.emulation import round_to
from stability.core.lowp.recipes import get_recipe
from stability.core.lowp.training import Fp8Training
from stability.core.registry import lookup
from stability.errors import StabilityError
from stability.integrations.watch import NonFiniteError, Watch
from stability.train.attribution import Attribution
from stability.train.doctor.diagnosis import INF, NAN, geometric_growth
from stability.train.doctor.replay import _FirstNonFinite
from stability.train.lr_search import diverged, largest_stable_lr
from stability.train.scaler import LossScaler
from stability.usermodel.spec import MODES, UserSetup, set_mode

DTYPES = ("float32", "float16", "bfloat16", "float8")  # float8: HYBRID, emulated
SEARCH_RTOL = 0.05  # the lr search stops when its bracket is 5 % wide: trials are whole runs

Params = Iterable[nn.Parameter]
# name -> (parameters, lr, momentum, weight_decay) -> optimiser; torch's own defaults
# otherwise. "momentum" is SGD with momentum 0.9 unless --momentum says otherwise, as the
# MLP doctor's "momentum" is; adamw's decay is --weight-decay (0 unless given), not torch's 0.01.
OPTIMIZERS: dict[str, Callable[[Params, float, float | None, float], torch.optim.Optimizer]] = {
    "sgd": lambda p, lr, m, wd: torch.optim.SGD(p, lr=lr, momentum=m or 0.0, weight_decay=wd),
    "momentum": lambda p, lr, m, wd: torch.optim.SGD(
        p, lr=lr, momentum=0.9 if m is None else m, weight_decay=wd
    ),
    "adam": lambda p, lr, m, wd: torch.optim.Adam(p, lr=lr, weight_decay=wd),
    "adamw": lambda p, lr, m, wd: torch.optim.AdamW(p, lr=lr, weight_decay=wd),
}


@dataclass(frozen=True)
class ModelTrainConfig:
    """How to train the user's model: optimiser, learning rate, steps, the emulated dtype."""

    lr: float = 0.01
    optimizer: str = "sgd"
    steps: int = 100
    dtype: str = "float32"
    device: str = "cpu"
    mode: str = "eval"
    momentum: float | None = None
    weight_decay: float = 0.0
    recipe: str = "tensor"  # float8's scaling recipe (``core.lowp.recipes``)

    def __post_init__(self) -> None:
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise StabilityError(f"learning rate must be finite and > 0, got {self.lr}")
        if self.steps < 1:
            raise StabilityError(f"steps must be an integer >= 1, got {self.steps}")
        lookup("optimizer", self.optimizer, OPTIMIZERS)
        lookup("dtype", self.dtype, {d: d for d in DTYPES})
        get_recipe(self.recipe)
        lookup("--mode", self.mode, MODES)
        if self.momentum is not None and self.optimizer not in ("sgd", "momentum"):
            raise StabilityError(f"--momentum is for sgd and momentum, not {self.optimizer}")
        for name, value in (("momentum", self.momentum), ("weight-decay", self.weight_decay)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise StabilityError(f"--{name} must be finite and >= 0, got {value}")

    def optimizer_line(self) -> str:
        """``adamw lr 0.001, weight decay 0.01``: the optimiser as set."""
        extra = "" if self.momentum is None else f", momentum {self.momentum:g}"
        extra += f", weight decay {self.weight_decay:g}" if self.weight_decay else ""
        return f"{self.optimizer} lr {self.lr:g}{extra}"


@dataclass
class ModelDiagnosis:
    """What the doctor found on the user's model; ``summary()`` reads as a few lines."""

    model: str
    config: ModelTrainConfig
    status: str  # stable or diverged
    objective: str = ""
    steps_run: int = 0
    step: int | None = None
    attribution: Attribution | None = None
    skipped_steps: int = 0
    losses: list[float] = field(default_factory=list)
    layers: pd.DataFrame = field(default_factory=pd.DataFrame)
    fp8_rows: list[dict[str, Any]] = field(default_factory=list)  # float8: per step and module

    def as_row(self) -> dict[str, Any]:
        a = self.attribution
        grew, factor = geometric_growth(self.losses)
        return {
            "model": self.model, **asdict(self.config), "objective": self.objective,
            "status": self.status,
            "steps_run": self.steps_run, "step": self.step,
            "module": a.module if a else None, "phase": a.phase if a else None,
            "kind": a.kind if a else None, "op": a.op if a else None,
            "mechanism": a.mechanism if a else None, "detail": a.detail if a else "",
            "grew_geometrically": grew, "growth_per_step": factor,
            "initial_loss": self.losses[0] if self.losses else math.nan,
            "last_loss": self.losses[-1] if self.losses else math.nan,
        }  # fmt: skip

    def summary(self) -> str:
        c = self.config
        dtype = f"{c.dtype} (hybrid, recipe {c.recipe})" if c.dtype == "float8" else c.dtype
        lines = [f"model: {self.model}; {c.optimizer_line()}, {dtype}, {c.steps} steps",
                 f"mode: {MODES[c.mode]}", f"objective: {self.objective}"]  # fmt: skip
        finite = [v for v in self.losses if math.isfinite(v)]
        if self.status == "stable":
            lines.append(f"stable: {self.steps_run} steps, all values finite; loss "
                         f"{finite[0]:.4g} -> {finite[-1]:.4g}")  # fmt: skip
            return "\n".join(lines)
        assert self.attribution is not None
        lines.append(f"first non-finite value: step {self.step}, {self.attribution.line()}")
        grew, factor = geometric_growth(finite)
        if grew:
            lines.append(f"  the loss grew geometrically before: x{factor:.3g} per step")
            lines.append("  advice: lower the learning rate")
        elif self.step == 0 and self.attribution.phase == "forward":
            lines.append(
                "  advice: it overflows at initialisation: rescale that module's inputs "
                "or weights, or compute it stably (a softmax: subtract the row max)"
            )
        elif self.attribution.mechanism in ("0 / 0", "invalid"):
            lines.append("  advice: guard the denominator or the operation's domain (an eps)")
        else:
            lines.append("  advice: lower the learning rate or the init scale of that module")
        return "\n".join(lines)


class _Run:
    """One training run of a fresh copy of the user's model (the setup's is never changed)."""

    def __init__(self, setup: UserSetup, cfg: ModelTrainConfig, scaling: bool = False) -> None:
        self.setup = setup
        self.cfg = cfg
        self.model: nn.Module = copy.deepcopy(setup.model).to(cfg.device)
        set_mode(self.model, cfg.mode)
        self.batch = setup.batch.to(cfg.device)
        self.fp8 = Fp8Training(self.model, "hybrid", cfg.recipe) if cfg.dtype == "float8" else None
        self.reduced = cfg.dtype not in ("float32", "float8")  # float8 keeps float32 masters
        self.torch_dtype = getattr(torch, cfg.dtype) if self.reduced else torch.float32
        factory = lookup("optimizer", cfg.optimizer, OPTIMIZERS)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = factory(params, cfg.lr, cfg.momentum, cfg.weight_decay)
        self.scaler = LossScaler(dtype=self.torch_dtype, enabled=scaling and self.reduced)
        self.skipped = 0
        self.zero_fractions: list[dict[str, float]] = []

    def output(self) -> Any:
        """The model's whole output on the batch (``model(*args, **kwargs)``); not through
        ``run_forward``, whose one-line error would swallow the watch's ``NonFiniteError``
        (the setup's check has shown the batch fits)."""
        return self.batch.call(self.model)

    @contextmanager
    def _precision(self) -> Iterator[None]:
        if self.fp8 is not None:
            with self.fp8:
                yield
            return
        with emulate(self.model, self.cfg.dtype) if self.reduced else nullcontext():
            yield

    def step(self, track_zeros: bool = False) -> float:
        """One step; the loss before the update (NaN/inf kept)."""
        self.optimizer.zero_grad(set_to_none=True)
        with self._precision():
            loss = self.setup.loss_from(self.output())
            value = float(loss.detach())
            if not math.isfinite(value):
                return value
            self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        zeros: dict[str, float] = {}
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if p.grad is None:
                    continue
                if self.reduced:
                    p.grad.copy_(round_to(p.grad, self.torch_dtype))
                if track_zeros and name.endswith("weight"):
                    zeros[name.rpartition(".")[0]] = float((p.grad == 0).float().mean())
        if track_zeros:
            self.zero_fractions.append(zeros)
        before = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.skipped += int(self.scaler.get_scale() < before)
        return value


def diagnose_model(setup: UserSetup, cfg: ModelTrainConfig) -> ModelDiagnosis:
    """Train a copy of ``setup.model`` for ``cfg.steps`` steps under ``watch``."""
    run = _Run(setup, cfg)
    losses: list[float] = []
    watch = Watch(run.model, every=1, on_nonfinite="raise")
    diag = ModelDiagnosis(setup.model_ref, cfg, "stable", setup.objective, cfg.steps,
                          losses=losses)  # fmt: skip
    try:
        with watch:
            for step in range(cfg.steps):
                loss = run.step()
                losses.append(loss)
                if not math.isfinite(loss):  # the model's output was finite: the loss made it
                    found = _loss_attribution(run, loss)
                    diag = ModelDiagnosis(setup.model_ref, cfg, "diverged", setup.objective,
                                          step + 1, step, found, losses=losses)  # fmt: skip
                    break
    except NonFiniteError as exc:
        diag = ModelDiagnosis(setup.model_ref, cfg, "diverged", setup.objective, exc.step + 1,
                              exc.step, exc.attribution, losses=losses)  # fmt: skip
    diag.layers = last_finite(watch.to_frame(wide=True))
    if run.fp8 is not None:
        diag.fp8_rows = run.fp8.rows(steps=diag.steps_run)
    return diag


def _loss_attribution(run: _Run, loss: float) -> Attribution:
    """Replay the loss of the (finite) output under the doctor's dispatch mode: its operator."""
    with torch.no_grad(), run._precision():
        out = run.output()
    mode = _FirstNonFinite([("loss", "forward")])
    with contextlib.suppress(Exception), mode:  # the mode stops at the first NaN
        run.setup.loss_from(out)
    event = mode.first_inf or mode.first_nan
    kind = NAN if math.isnan(loss) else INF
    if event is None:
        return Attribution("loss", "forward", kind, None, "loss", "the loss was not finite")
    kind = INF if mode.first_inf is not None else NAN
    return Attribution("loss", "forward", kind, event.op, event.mechanism, event.detail)


def last_finite(wide: pd.DataFrame) -> pd.DataFrame:
    """Per module, the statistics of the last step at which they were all finite."""
    if wide.empty:
        return wide
    cols = ["act_var", "act_max_abs", "grad_var"]
    finite = wide[np.isfinite(wide[cols].to_numpy(dtype=float)).all(axis=1)]
    last: pd.DataFrame = finite.groupby("module", sort=False).tail(1)
    return last.reset_index(drop=True)


def lr_search(setup: UserSetup, cfg: ModelTrainConfig, trial_steps: int) -> pd.DataFrame:
    """The largest learning rate whose ``trial_steps``-step run does not diverge."""

    def diverges(lr: float) -> bool:
        run = _Run(setup, replace(cfg, lr=lr, steps=trial_steps))
        losses = []
        for _ in range(trial_steps):
            losses.append(run.step())
            if not math.isfinite(losses[-1]):
                break
        return diverged(losses)

    found = largest_stable_lr(diverges, start=cfg.lr, rtol=SEARCH_RTOL, max_bracket_steps=30)
    return pd.DataFrame([{"model": setup.model_ref, **asdict(cfg), "trial_steps": trial_steps,
                          **found.as_dict()}])  # fmt: skip


def loss_scaling(setup: UserSetup, cfg: ModelTrainConfig) -> pd.DataFrame:
    """Train in the reduced dtype with and without loss scaling: per module, the mean
    fraction of weight gradients that are zero in the dtype; per run, the final loss."""
    if cfg.dtype in ("float32", "float8"):
        raise StabilityError(
            f"--loss-scaling needs a reduced dtype; got {cfg.dtype!r}, expected one of "
            "['bfloat16', 'float16']"
        )
    rows = []
    for scaling in (False, True):
        run = _Run(setup, cfg, scaling=scaling)
        losses = [run.step(track_zeros=True) for _ in range(cfg.steps)]
        zeros = pd.DataFrame(run.zero_fractions).mean()
        for module, fraction in zeros.items():
            rows.append({"model": setup.model_ref, "dtype": cfg.dtype, "loss_scaling": scaling,
                         "module": module, "zero_grad_fraction": float(fraction),
                         "final_loss": losses[-1], "skipped_steps": run.skipped,
                         "final_scale": run.scaler.get_scale()})  # fmt: skip
    return pd.DataFrame(rows)
