"""Numerical stability: loss scaling, the remedy for float16 gradients that flush to zero.

The notes: float16's range is about 6e-5 to 6e4, so small gradients underflow. Mixed
precision training multiplies the loss by a scale before the backward pass and divides the
gradients by it afterwards; the scale backs off when a step overflows and grows again after
a run of clean steps. Checked here: the emulated loss scaler (``stability.train.loss_scaling``)
follows ``torch.amp.GradScaler``'s rule step for step, and a gradient float16 flushes to zero
survives the backward pass once the loss is scaled by GradScaler's initial 2^16.
"""

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from witness import assert_fails_on

from stability.core.emulation import round_to, round_with_grad
from stability.train.loss_scaling import LossScaler

CHAPTER = "Numerical stability: loss scaling"

# -- loss scaling ---------------------------------------------------------------------------

bad_steps = st.lists(st.booleans(), min_size=1, max_size=12)


def scale_sequence(scaler: LossScaler | torch.amp.GradScaler, bad: list[bool]) -> list[float]:
    """Drive a scaler over steps whose gradients are inf where ``bad``; the scale after each."""
    p = nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=0.0)
    out = []
    for is_bad in bad:
        opt.zero_grad()
        loss = (p * (math.inf if is_bad else 1.0)).sum()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        out.append(float(scaler.get_scale()))
    return out


@given(bad_steps, st.integers(min_value=1, max_value=3))
def test_loss_scaler_follows_grad_scaler(bad: list[bool], interval: int) -> None:
    ours = scale_sequence(LossScaler(growth_interval=interval), bad)
    torch_scaler = torch.amp.GradScaler("cpu", growth_interval=interval)
    assert ours == scale_sequence(torch_scaler, bad)


class NoResetScaler(LossScaler):
    """Forgets to reset the clean-step count on a backoff: grows too early after an inf."""

    def update(self) -> None:
        if self._found_inf:
            self._scale *= self.backoff_factor
            self._found_inf = None
        else:
            super().update()


def test_witness_loss_scaler_follows_grad_scaler() -> None:
    bad = [False, True, False]  # interval 2: GradScaler grows only after 2 clean steps
    ours = scale_sequence(NoResetScaler(growth_interval=2), bad)
    assert ours != scale_sequence(torch.amp.GradScaler("cpu", growth_interval=2), bad)


# -- recovering gradients that float16 flushes ----------------------------------------------

LOSS_SCALE = 2.0**16  # torch.amp.GradScaler's init_scale
# Gradients g in [2^-30, 2^-25): float16 flushes them (<= 2^-25) and S * g lies in
# [2^-14, 2^-9): normal float16, so one rounding costs at most half an ulp, 2^-11 relative.
TINY_GRADS = st.floats(min_value=2.0**-30, max_value=2.0**-25, exclude_max=True, width=32)
FP16_HALF_ULP = 2.0**-11


def check_init_scale(scaler: LossScaler | torch.amp.GradScaler) -> None:
    assert scaler.get_scale() == LOSS_SCALE, f"starts at {scaler.get_scale()}, not 2^16"


SCALERS: list[tuple[str, Callable[[], LossScaler | torch.amp.GradScaler]]] = [
    ("GradScaler", lambda: torch.amp.GradScaler("cpu")),
    ("LossScaler", LossScaler),
]


@pytest.mark.parametrize("make", [m for _, m in SCALERS], ids=[i for i, _ in SCALERS])
def test_loss_scale_is_gradscalers(make: Callable[[], LossScaler | torch.amp.GradScaler]) -> None:
    """The scale used here is GradScaler's initial one, and the emulated LossScaler's."""
    check_init_scale(make())


def test_witness_loss_scale_is_gradscalers() -> None:
    """A scaler started at 2^15 (a plausible misremembering) fails the same check."""
    misremembered = torch.amp.GradScaler("cpu", init_scale=2.0**15)
    assert_fails_on(misremembered, check_init_scale, variant_name="GradScaler(init_scale=2^15)")


def emulated_fp16_grad(g: float, scale: float) -> float:
    """d loss / d w for loss = scale * g * y, y = fp16-stored (w * 1), then unscaled in float32.

    The gradient reaching y is ``scale * g``; the emulation rounds it to float16 on its way
    back (as storing an activation gradient in float16 would).
    """
    w = torch.ones((), requires_grad=True)
    y = round_with_grad(w * 1.0, torch.float16)
    loss = torch.tensor(g, dtype=torch.float32) * y * scale
    loss.backward()  # type: ignore[no-untyped-call]
    assert w.grad is not None
    return float(w.grad / scale)


def check_recovers(scale: float, g: float) -> None:
    """A loss scaled by ``scale`` brings ``g`` back through float16 to half an ulp."""
    recovered = emulated_fp16_grad(g, scale)
    assert recovered != 0.0, f"the gradient {g} was flushed to 0"
    assert abs(recovered - g) <= FP16_HALF_ULP * g, f"{recovered} for {g}"


@given(TINY_GRADS)
def test_loss_scaling_recovers_gradient(g: float) -> None:
    """Scaling the loss by 2^16 recovers a gradient that float16 flushes to zero."""
    assert round_to(torch.tensor(g), torch.float16).item() == 0.0
    check_recovers(LOSS_SCALE, g)


@given(TINY_GRADS)
def test_witness_loss_scaling_recovers_gradient(g: float) -> None:
    """Without loss scaling (a scale of 1) the same gradient is lost entirely."""
    error = assert_fails_on(1.0, check_recovers, g)
    assert "flushed to 0" in str(error)
