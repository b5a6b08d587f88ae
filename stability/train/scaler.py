"""Dynamic loss scaling: the ``torch.amp.GradScaler`` rule for gradients held in float32.

Small gradients flush to zero in float16 (below about 2^-25 = 3e-8). Scaling the loss by
``S`` scales every gradient by ``S`` on the way down, so they stay representable; the
weights' gradients are divided by ``S`` again (in float32) before the update. GradScaler's
rule: start at ``S = 2^16``; on a step whose gradients hold inf or NaN, skip the update and
halve ``S``; after ``growth_interval`` (2000) clean steps in a row, double ``S``.

``LossScaler`` implements that rule for the emulated path on CPU (the model computes in
float32 and rounds to float16 at layer boundaries, so GradScaler's fp16 machinery has nothing
to act on). On CUDA the trainer uses ``torch.amp.GradScaler`` itself, with autocast.

Like GradScaler, a ``LossScaler(enabled=False)`` is a no-op: scale 1, the loss passed through
untouched, every step applied. The trainer always holds a scaler, so it never asks whether it
has one; only the doctor asks ``is_enabled()``, to know whether a step with inf gradients will
be skipped (and so is not yet a divergence).
"""

from typing import Protocol

import torch

from stability.errors import StabilityError

INIT_SCALE = 2.0**16
GROWTH_FACTOR = 2.0
BACKOFF_FACTOR = 0.5
GROWTH_INTERVAL = 2000


class Scaler(Protocol):
    """What the trainer needs of a loss scaler (``LossScaler`` or ``torch.amp.GradScaler``)."""

    def scale(self, outputs: torch.Tensor) -> torch.Tensor: ...

    def step(self, optimizer: torch.optim.Optimizer) -> float | None: ...

    def update(self) -> None: ...

    def get_scale(self) -> float: ...

    def is_enabled(self) -> bool: ...


class LossScaler:
    """GradScaler's dynamic loss scale, for gradients held in float32 (emulated precision).

    Use as ``scale(loss).backward(); step(optimizer); update()``; ``step`` unscales the
    gradients in place and skips the update if any is inf or NaN. Disabled, it does nothing
    but call ``optimizer.step()``.
    """

    def __init__(
        self,
        init_scale: float = INIT_SCALE,
        growth_factor: float = GROWTH_FACTOR,
        backoff_factor: float = BACKOFF_FACTOR,
        growth_interval: int = GROWTH_INTERVAL,
        dtype: torch.dtype = torch.float16,
        enabled: bool = True,
    ) -> None:
        if not (init_scale > 0 and growth_factor > 1 and 0 < backoff_factor < 1):
            raise StabilityError(
                "loss scaler needs init_scale > 0, growth_factor > 1, 0 < backoff_factor < 1; "
                f"got {init_scale}, {growth_factor}, {backoff_factor}"
            )
        if growth_interval < 1:
            raise StabilityError(f"growth_interval must be >= 1, got {growth_interval}")
        self.enabled = enabled
        self._scale = float(init_scale) if enabled else 1.0
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.dtype = dtype
        self._growth_tracker = 0
        self._found_inf: bool | None = None  # None: this step's gradients not unscaled yet

    def is_enabled(self) -> bool:
        """Whether steps with inf/NaN gradients are skipped (GradScaler's name for it)."""
        return self.enabled

    def get_scale(self) -> float:
        return self._scale

    def scale(self, outputs: torch.Tensor) -> torch.Tensor:
        """The loss times the current scale (backward through it gives scaled gradients).

        Disabled: the loss itself, so backward is exactly the unscaled one.
        """
        if not self.enabled:
            return outputs
        return outputs * self._scale

    def unscale_(self, optimizer: torch.optim.Optimizer) -> bool:
        """Divide the gradients by the scale in place; True if any gradient is inf or NaN."""
        if not self.enabled:
            return False
        inv = 1.0 / self._scale
        bad = torch.zeros((), dtype=torch.bool)
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    bad = bad | ~torch.isfinite(p.grad).all().cpu()
                    p.grad.mul_(inv)
        self._found_inf = bool(bad)
        return self._found_inf

    def step(self, optimizer: torch.optim.Optimizer) -> float | None:
        """Unscale (if not done yet) and update, unless a gradient was inf/NaN: then skip."""
        if not self.enabled:
            optimizer.step()
            return None
        if self._found_inf is None:
            self.unscale_(optimizer)
        if self._found_inf:
            return None
        optimizer.step()
        return None

    def update(self) -> None:
        """Back off after a bad step, grow after ``growth_interval`` clean steps in a row."""
        if not self.enabled:
            return
        if self._found_inf is None:
            raise StabilityError("update() called before step() in this iteration")
        if self._found_inf:
            self._scale *= self.backoff_factor
            self._growth_tracker = 0
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self.growth_interval:
                self._scale *= self.growth_factor
                self._growth_tracker = 0
        self._found_inf = None
