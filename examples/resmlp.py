"""A ResNet-style MLP (pre-activation blocks with skip connections), to probe.

    stability probe --model examples.resmlp:build --input 64x32:float32 --loss mse

Each block adds ``fc2(relu(bn2(fc1(relu(bn1(x))))))`` to ``x``. The branch reads a batch-
normalised input, so at Kaiming initialisation it adds about the same variance ``c`` at every
block (c ~ 1 here) and ``Var_l ~ Var_0 + l c``: the variance grows linearly with depth, where
a plain Kaiming MLP (``skip=False``) keeps it flat.
"""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width: int, skip: bool) -> None:
        super().__init__()
        self.skip = skip
        self.bn1 = nn.BatchNorm1d(width)
        self.fc1 = nn.Linear(width, width)
        self.bn2 = nn.BatchNorm1d(width)
        self.fc2 = nn.Linear(width, width)
        for fc in (self.fc1, self.fc2):
            nn.init.kaiming_normal_(fc.weight, nonlinearity="relu")
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch: torch.Tensor = self.fc2(torch.relu(self.bn2(self.fc1(torch.relu(self.bn1(x))))))
        return x + branch if self.skip else branch


class ResMLP(nn.Module):
    def __init__(self, depth: int, width: int, skip: bool) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(Block(width, skip) for _ in range(depth)))
        self.head = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.blocks(x))
        return out


def build(depth: int = 8, width: int = 32, skip: bool = True) -> ResMLP:
    """The factory ``--model examples.resmlp:build`` calls (``skip=false``: a plain MLP)."""
    return ResMLP(depth, width, skip)


def make_batch(batch: int = 64, width: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-variance inputs and regression targets from a fixed seed."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, width, generator=gen), torch.randn(batch, width, generator=gen)
