"""The timed steps (training and inference) and their FLOP counts.

FLOPs are counted from the shapes, matmuls only: a forward pass of a depth-``L``,
width-``W`` MLP on a batch of ``B`` is ``2 B W^2 L``; a training step adds a backward pass
of twice that (gradients of the input and of the weight), ``6 B W^2 L`` in all.

The ``STABILITY_PLANT_SLOWDOWN`` environment variable (a fraction, e.g. ``0.25``) makes
every training step do that much extra matmul work. It exists only to prove that the gate
catches slowdowns (``scripts/prove_gate.py``) and is off unless explicitly set.
"""

import os
from collections.abc import Callable

import torch

from stability.core.config import MLPConfig
from stability.core.model import build_mlp, input_batch
from stability.core.probe import Probe, projection_loss
from stability.errors import StabilityError
from stability.measure.calibration import Gemm
from stability.measure.timer import Timer

PLANT_SLOWDOWN_ENV = "STABILITY_PLANT_SLOWDOWN"
# The SGD update runs with lr 0: the arithmetic of a real step (one add per parameter)
# without moving the weights, so every timed step computes the same numbers. A real lr
# drives the projection loss (a sum over B*W outputs) to inf within a few steps, and
# timing NaN arithmetic is not what anyone wants to know.
LEARNING_RATE = 0.0


def forward_flops(depth: int, width: int, batch: int) -> int:
    """Matmul FLOPs of one forward pass: ``2 * B * W^2`` per layer."""
    return 2 * batch * width * width * depth


def train_flops(depth: int, width: int, batch: int) -> int:
    """Forward plus backward (twice the forward: input and weight gradients)."""
    return 3 * forward_flops(depth, width, batch)


def _planted_slowdown() -> float:
    raw = os.environ.get(PLANT_SLOWDOWN_ENV, "")
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise StabilityError(f"{PLANT_SLOWDOWN_ENV}={raw!r} is not a number") from None
    if not 0.0 <= value <= 10.0:
        raise StabilityError(f"{PLANT_SLOWDOWN_ENV}={raw!r} must be in [0, 10]")
    return value


def _best_time(fn: Callable[[], object], device: str, calls: int) -> float:
    """The fastest of ``calls`` single calls: the cost of ``fn`` without the neighbours."""
    return Timer(fn, device, warmup=0, iterations=1).measure(calls).min


class TrainStep:
    """Forward, projection loss, backward, SGD step; counts non-finite losses on device.

    The count stays a device tensor (no host sync per step); read it with ``nonfinite()``.
    """

    def __init__(
        self,
        config: MLPConfig,
        batch: int,
        probe_every: int | None = None,
        lr: float = LEARNING_RATE,
    ) -> None:
        self.config = config
        self.batch = batch
        self.device = config.device
        self.model = build_mlp(config)
        self.x = input_batch(config, batch)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.probe = Probe(self.model, every=probe_every).attach() if probe_every else None
        self.probe_every = probe_every
        self.flops = train_flops(config.depth, config.width, batch)
        self._bad = torch.zeros((), dtype=torch.int64, device=self.device)
        self._extra: Callable[[], None] | None = None
        self._extra = self._planted_work(_planted_slowdown())

    def _planted_work(self, fraction: float) -> Callable[[], None] | None:
        """Extra matmuls taking ``fraction`` of the step's time (proof of the gate only).

        Sized by time, not FLOPs (a small step is not GEMM-bound): the step and one small
        GEMM are each timed here (best of several calls) and the GEMM is repeated
        ``fraction * t_step / t_gemm`` times after every step.
        """
        if fraction <= 0:
            return None
        unit = Gemm(max(1, self.batch // 8), self.config.width, self.x.dtype, self.device)
        t_step = _best_time(self, self.device, 5)
        t_unit = _best_time(unit, self.device, 20)
        repeats = max(1, round(fraction * t_step / t_unit))

        def extra() -> None:
            for _ in range(repeats):
                unit()

        return extra

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = projection_loss(self.model(self.x))
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        self._bad += (~torch.isfinite(loss.detach())).to(torch.int64)
        if self._extra is not None:
            self._extra()

    def nonfinite(self) -> int:
        """Steps so far whose loss was NaN or inf (recorded, never hidden)."""
        return int(self._bad)

    def close(self) -> None:
        if self.probe is not None:
            self.probe.detach()


class ForwardStep:
    """Inference: eval mode, ``torch.no_grad``, one forward pass."""

    def __init__(self, config: MLPConfig, batch: int) -> None:
        self.config = config
        self.batch = batch
        self.device = config.device
        self.model = build_mlp(config).eval()
        self.x = input_batch(config, batch)
        self.flops = forward_flops(config.depth, config.width, batch)
        self.probe_every: int | None = None
        self._bad = torch.zeros((), dtype=torch.int64, device=self.device)

    def __call__(self) -> None:
        with torch.no_grad():
            out = self.model(self.x)
            self._bad += (~torch.isfinite(out)).any().to(torch.int64)

    def nonfinite(self) -> int:
        """Passes so far whose output held a NaN or inf."""
        return int(self._bad)

    def close(self) -> None:
        pass


Step = TrainStep | ForwardStep


def make_train_step(
    config: MLPConfig, batch: int, probe_every: int | None = None, lr: float = LEARNING_RATE
) -> TrainStep:
    """The timed training step; ``probe_every=N`` attaches ``Probe(model, every=N)``."""
    return TrainStep(config, batch, probe_every, lr)


def make_forward_step(config: MLPConfig, batch: int) -> ForwardStep:
    return ForwardStep(config, batch)


def compute_dtype(step: Step) -> torch.dtype:
    """The dtype the step's matmuls run in: the calibration GEMM must use the same."""
    return step.config.precision.compute_dtype
