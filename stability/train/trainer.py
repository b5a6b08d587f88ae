"""Bounded training of the probe MLP on a synthetic data set, one inspectable step at a time.

The network is ``build_mlp(config)`` plus a linear ``Head`` to the task's outputs. The data
are made on the fly from the seed: ``teacher`` (targets from a fixed random tanh network),
``regression`` (a noisy random linear map) or ``classification`` (labels from the argmax of a
random linear map). Steps cycle through a fixed shuffled data set, so step ``i`` always sees
the same batch: a failing step can be replayed exactly (the doctor relies on it).

Under emulated reduced precision (float16/bfloat16 on CPU) training follows AMP, as the CUDA
path does with autocast: float32 master weights, of which each forward and backward sees a
copy rounded to the dtype (``Trainer.half_weights``); the head rounds its output like the
blocks do; parameter gradients are rounded to the dtype after backward (as half-precision
gradients are); the update is applied to the float32 masters, so small updates are not
rounded away. The loss itself is computed in float32, as under AMP.
"""

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from stability.core.config import MLPConfig
from stability.core.emulation import round_to, round_with_grad
from stability.core.inits import get_init, init_linear_
from stability.core.model import MLP, build_mlp
from stability.core.registry import lookup
from stability.errors import StabilityError
from stability.train.scaler import LossScaler, Scaler

DATASETS = ("teacher", "regression", "classification")
TEACHER_DEPTH = 2
REGRESSION_NOISE = 0.1
DATA_SEED_OFFSET = 7_919  # data and teacher are seeded apart from the weights
HEAD_SEED_OFFSET = 104_729


OptimizerFactory = Callable[[Iterator[nn.Parameter], float], torch.optim.Optimizer]

OPTIMIZERS: dict[str, OptimizerFactory] = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "momentum": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
}


def update_dtype(model: MLPConfig) -> torch.dtype:
    """The dtype the optimiser updates weights in: float32 masters unless float64."""
    return torch.float64 if model.dtype == "float64" else torch.float32


def max_lr(model: MLPConfig) -> float:
    """The largest learning rate the optimiser can multiply a gradient by without overflow
    (torch refuses a step size that does not fit in the weights' dtype)."""
    return float(torch.finfo(update_dtype(model)).max)


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how: the network config plus the optimisation settings.

    ``loss_scaling`` applies to reduced precision only: the emulated GradScaler rule on CPU
    (``stability.train.scaler.LossScaler``), ``torch.amp.GradScaler`` with autocast on CUDA.
    """

    model: MLPConfig
    lr: float = 0.01
    optimizer: str = "sgd"
    steps: int = 100
    data: str = "teacher"
    batch: int = 64
    samples: int = 512
    classes: int = 10
    loss_scaling: bool = False
    scale_growth_interval: int = 2000

    def __post_init__(self) -> None:
        lookup("optimizer", self.optimizer, OPTIMIZERS)
        lookup("data set", self.data, {d: d for d in DATASETS})
        if isinstance(self.lr, bool) or not isinstance(self.lr, int | float):
            raise StabilityError(f"learning rate must be a number, got {self.lr!r}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise StabilityError(f"learning rate must be finite and > 0, got {self.lr}")
        if self.lr > max_lr(self.model):
            raise StabilityError(
                f"learning rate {self.lr:g} does not fit in "
                f"{str(update_dtype(self.model)).removeprefix('torch.')}, the "
                f"dtype the weights are updated in (largest {max_lr(self.model):.4g})"
            )
        for name, value, minimum in [
            ("steps", self.steps, 1),
            ("batch", self.batch, 1),
            ("classes", self.classes, 2),
            ("scale growth interval", self.scale_growth_interval, 1),
        ]:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise StabilityError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int):
            raise StabilityError(f"samples must be an integer, got {self.samples!r}")
        if self.samples < self.batch:
            raise StabilityError(f"samples must be >= batch ({self.batch}), got {self.samples}")

    def as_dict(self) -> dict[str, Any]:
        """Flat row: the network's fields, then the training fields."""
        row = self.model.as_dict()
        row.update({k: v for k, v in asdict(self).items() if k != "model"})
        return row


@dataclass(frozen=True)
class Dataset:
    """Inputs (samples, width) and targets: floats (samples, 1) or class ids (samples,)."""

    x: torch.Tensor
    y: torch.Tensor
    out_features: int
    loss: str  # "mse" or "cross_entropy"


def make_dataset(name: str, width: int, samples: int, classes: int, seed: int) -> Dataset:
    """The named synthetic task, deterministic for ``seed`` (CPU float32 tensors)."""
    lookup("data set", name, {d: d for d in DATASETS})
    gen = torch.Generator().manual_seed(seed + DATA_SEED_OFFSET)
    x = torch.randn(samples, width, generator=gen)
    if name == "teacher":
        h = x
        for _ in range(TEACHER_DEPTH):
            w = torch.randn(width, width, generator=gen) * math.sqrt(1.0 / width)
            h = torch.tanh(h @ w.T * (5.0 / 3.0))  # tanh gain keeps the signal O(1)
        y = h @ torch.randn(width, 1, generator=gen)
        y = (y - y.mean()) / y.std().clamp_min(1e-12)
        return Dataset(x, y, 1, "mse")
    if name == "regression":
        w = torch.randn(width, 1, generator=gen) / math.sqrt(width)
        y = x @ w + REGRESSION_NOISE * torch.randn(samples, 1, generator=gen)
        return Dataset(x, y, 1, "mse")
    c = torch.randn(width, classes, generator=gen)
    return Dataset(x, (x @ c).argmax(dim=1), classes, "cross_entropy")


class Head(nn.Module):
    """The readout ``Linear(width, out)``; rounds its output under emulation, like a block."""

    def __init__(self, width: int, out: int, round_dtype: torch.dtype | None) -> None:
        super().__init__()
        self.linear = nn.Linear(width, out)
        self.round_dtype = round_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.linear(x)
        if self.round_dtype is not None:
            y = round_with_grad(y, self.round_dtype)
        return y


class TrainModel(nn.Module):
    """``build_mlp``'s body followed by a ``Head``; ``watched()`` lists them in forward order."""

    def __init__(self, body: MLP, head: Head) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def watched(self) -> list[tuple[str, nn.Module]]:
        """(label, module) of every layer the doctor watches, in forward order."""
        out: list[tuple[str, nn.Module]] = [
            (f"layer {i}", b) for i, b in enumerate(self.body.layers, start=1)
        ]
        out.append(("head", self.head))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.head(self.body(x))
        return y


def build_train_model(config: MLPConfig, out_features: int) -> TrainModel:
    """``build_mlp(config)`` plus a head initialised with the same init (Xavier for LSUV)."""
    body = build_mlp(config)
    head = Head(config.width, out_features, config.precision.round_dtype)
    init = "xavier_normal" if get_init(config.init).data_driven else config.init
    init_linear_(head.linear, init, torch.Generator().manual_seed(config.seed + HEAD_SEED_OFFSET))
    precision = config.precision
    if precision.round_dtype is not None:
        with torch.no_grad():
            for p in head.parameters():
                p.copy_(round_to(p, precision.round_dtype))
    head = head.to(device=config.device, dtype=precision.compute_dtype)
    return TrainModel(body, head)


class Trainer:
    """One training run, steppable: ``compute(step)`` then ``apply()``, or ``step(i)``.

    ``compute`` runs forward, loss and backward and returns the (detached) loss; ``apply``
    updates the weights. Keeping them apart lets a watcher inspect a step before it changes
    anything, and replay it exactly if it failed.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        mc = cfg.model
        if mc.device.startswith("cuda") and not torch.cuda.is_available():
            raise StabilityError(f"device {mc.device!r} requested but CUDA is not available")
        self.dtype = mc.precision.format
        self.mode = mc.precision.mode
        # Native half precision on CUDA trains an fp32 master model under autocast (AMP);
        # GradScaler refuses to unscale fp16 gradients of an fp16 model.
        self.autocast = self.mode == "native" and self.dtype.reduced
        net_cfg = MLPConfig(**{**mc.as_dict(), "dtype": "float32"}) if self.autocast else mc
        self.data = make_dataset(cfg.data, mc.width, cfg.samples, cfg.classes, mc.seed)
        self.model = build_train_model(net_cfg, self.data.out_features)
        self.compute_dtype = next(self.model.parameters()).dtype
        self.x = self.data.x.to(device=mc.device, dtype=self.compute_dtype)
        self.y = self.data.y.to(device=mc.device)
        if self.data.loss == "mse":
            self.y = self.y.to(self.compute_dtype)
        if self.mode == "emulated":
            self.x = round_to(self.x, self.dtype.dtype)
        order_gen = torch.Generator().manual_seed(mc.seed + DATA_SEED_OFFSET + 1)
        self.order = torch.randperm(cfg.samples, generator=order_gen).to(mc.device)
        factory = lookup("optimizer", cfg.optimizer, OPTIMIZERS)
        self.optimizer = factory(self.model.parameters(), cfg.lr)
        self.scaler = self._make_scaler()
        self.skipped_steps = 0
        # Per weight: (flushed, zero) fractions of its gradient as stored in the dtype
        # (``flush_fraction``); filled by backward() when tracking.
        self.track_grad_flush = False
        self.grad_flush: dict[str, torch.Tensor] = {}

    def _make_scaler(self) -> Scaler:
        """GradScaler under autocast, the emulated rule otherwise; a no-op when not scaling."""
        interval = self.cfg.scale_growth_interval
        enabled = self.cfg.loss_scaling and self.dtype.reduced
        if enabled and self.autocast:
            scaler: Scaler = torch.amp.GradScaler("cuda", growth_interval=interval)
            return scaler
        return LossScaler(growth_interval=interval, dtype=self.dtype.dtype, enabled=enabled)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of ``step``: a fixed window of the shuffled data set, cycling."""
        n, b = self.cfg.samples, self.cfg.batch
        start = (step * b) % n
        idx = self.order[(torch.arange(b, device=self.order.device) + start) % n]
        return self.x[idx], self.y[idx]

    def loss_of(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error or cross-entropy, in float32 at least (as AMP does)."""
        out = out.float() if out.dtype in (torch.float16, torch.bfloat16) else out
        if self.data.loss == "mse":
            return nn.functional.mse_loss(out, y.to(out.dtype))
        return nn.functional.cross_entropy(out, y)

    def forward_loss(self, step: int) -> torch.Tensor:
        """Forward pass and loss of ``step`` (under autocast for native half precision)."""
        x, y = self.batch(step)
        if self.autocast:
            with torch.autocast(device_type="cuda", dtype=self.dtype.dtype):
                out = self.model(x)
        else:
            out = self.model(x)
        return self.loss_of(out, y)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of a (possibly scaled) loss; half-precision gradients when emulating."""
        self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if p.grad is None:
                    continue
                if self.track_grad_flush and name.endswith("weight"):
                    self.grad_flush[name] = flush_fraction(p.grad, self.dtype.dtype, self.mode)
                if self.mode == "emulated":
                    p.grad.copy_(round_to(p.grad, self.dtype.dtype))

    @contextmanager
    def half_weights(self) -> Iterator[None]:
        """Emulated AMP: inside, the parameters hold their values rounded to the dtype.

        The float32 masters are put back on exit (after backward, when autograd no longer
        needs the rounded values); gradients stay. Outside emulation this does nothing.
        """
        if self.mode != "emulated":
            yield
            return
        params = list(self.model.parameters())
        masters = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p in params:
                p.copy_(round_to(p, self.dtype.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for p, master in zip(params, masters, strict=True):
                    p.copy_(master)

    def compute(self, step: int) -> torch.Tensor:
        """Zero the gradients, forward, loss, backward; the weights are not touched."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.half_weights():
            loss = self.forward_loss(step)
            self.backward(loss)
        return loss.detach()

    def apply(self) -> bool:
        """Update the weights from the current gradients; False if the scaler skipped it."""
        before = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # A skipped step is one the scaler backed off from (a disabled scaler never does).
        applied = self.scaler.get_scale() >= before
        if not applied:
            self.skipped_steps += 1
        return applied

    def step(self, step: int) -> torch.Tensor:
        """One full training step; returns the loss before the update (detached)."""
        loss = self.compute(step)
        self.apply()
        return loss


def flush_fraction(g: torch.Tensor, dtype: torch.dtype, mode: str) -> torch.Tensor:
    """(flushed, zero) fractions of ``g`` as stored in ``dtype``.

    Flushed: nonzero values that round to zero (emulated only; NaN natively, where the
    rounding already happened). Zero: values that are zero once stored.
    """
    if mode == "emulated":
        stored = g.to(dtype)
        flushed = ((g != 0) & (stored == 0)).float().mean()
        return torch.stack([flushed, (stored == 0).float().mean()])
    return torch.stack([torch.full((), math.nan, device=g.device), (g == 0).float().mean()])


@dataclass(frozen=True)
class TrainResult:
    """Losses per step (NaN/inf kept) and where the run stopped."""

    losses: list[float]
    diverged_at: int | None  # first step whose loss was not finite
    skipped_steps: int

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else math.nan


def train(cfg: TrainConfig, steps: int | None = None) -> TrainResult:
    """The plain bounded loop: stop at the first non-finite loss (one host sync per step)."""
    trainer = Trainer(cfg)
    losses: list[float] = []
    for i in range(cfg.steps if steps is None else steps):
        loss = float(trainer.step(i))
        losses.append(loss)
        if not math.isfinite(loss):
            return TrainResult(losses, i, trainer.skipped_steps)
    return TrainResult(losses, None, trainer.skipped_steps)
