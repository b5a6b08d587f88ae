"""The built-in model of ``stability coord-check``: a residual MLP with fixed input and output.

``readin: Linear(16, width)``, then ``depth`` pre-activation residual blocks
``x + linear(relu(x))`` (the branch's last module, ``blocks.i.linear``, is what depth
parameterisations scale), then ``readout: Linear(width, 8)``: the three kinds of weights
muP tells apart (input, hidden, output), on a fixed regression batch (mse against a
standard-normal target).
"""

import torch
from torch import nn

IN_FEATURES = 16
OUT_FEATURES = 8
BATCH = 64
BATCH_SEED = 1234


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.linear(torch.relu(x))
        return out


class ScalingMLP(nn.Module):
    """Input, hidden and output weights; ``residual_branches`` names what depth scaling scales."""

    residual_branches = ("blocks.*.linear",)

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.readin = nn.Linear(IN_FEATURES, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.readout = nn.Linear(width, OUT_FEATURES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.readin(x)
        for block in self.blocks:
            x = block(x)
        out: torch.Tensor = self.readout(x)
        return out


def build(width: int = 128, depth: int = 2) -> ScalingMLP:
    """The factory: ``width`` and ``depth`` are the scaled keyword arguments."""
    return ScalingMLP(width, depth)


def make_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """(input, target): the same fixed batch for every width, depth and seed."""
    gen = torch.Generator().manual_seed(BATCH_SEED)
    x = torch.randn(BATCH, IN_FEATURES, generator=gen)
    return x, torch.randn(BATCH, OUT_FEATURES, generator=gen)


MODEL_REF = "stability.scaling.mlp:build"
INPUT_REF = "stability.scaling.mlp:make_batch"
