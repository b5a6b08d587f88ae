"""A test helper factory: a small tanh MLP whose output is multiplied by ``out_scale``.

A tiny ``out_scale`` (1e-6) scales every gradient arriving at the ``out`` layer by as much:
below E5M2's smallest subnormal (2^-16) when nothing rescales it (recipe ``none``), kept
whole when the recipe rescales each tensor by its amax (``tensor``). The planted fault the
fp8 doctor must name."""

import torch
from torch import nn


class ScaledOut(nn.Module):
    def __init__(self, width: int, out_scale: float) -> None:
        super().__init__()
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.out_scale = out_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.out(torch.tanh(self.hidden(x)))
        return y * self.out_scale


def build(width: int = 16, out_scale: float = 1.0) -> nn.Module:
    torch.manual_seed(0)
    return ScaledOut(width, out_scale)
