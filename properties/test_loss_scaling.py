"""Numerical stability: loss scaling, the remedy for float16 gradients that flush to zero.

The notes: float16's range is about 6e-5 to 6e4, so small gradients underflow. Mixed
precision training multiplies the loss by a scale before the backward pass and divides the
gradients by it afterwards; the scale backs off when a step overflows and grows again after
a run of clean steps. Checked here: the emulated loss scaler (``stability.train.loss_scaling``)
follows ``torch.amp.GradScaler``'s rule step for step.
"""

import math

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

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
