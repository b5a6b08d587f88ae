"""A small CNN (convolutions, BatchNorm, pooling, a linear head), to probe.

stability probe --model examples.cnn:build --input 8x3x16x16:float32 --loss cross_entropy
"""

import torch
from torch import nn


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(c_out)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.pool(torch.relu(self.bn(self.conv(x))))
        return out


class CNN(nn.Module):
    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(ConvBlock(3, channels), ConvBlock(channels, 2 * channels))
        self.head = nn.Linear(2 * channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x).mean(dim=(2, 3))  # global average pooling
        out: torch.Tensor = self.head(features)
        return out


def build(channels: int = 8, classes: int = 10) -> CNN:
    """The factory ``--model examples.cnn:build`` calls."""
    return CNN(channels, classes)


def make_batch(batch: int = 8, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and class labels from a fixed seed."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, size, size, generator=gen), torch.randint(
        0, 10, (batch,), generator=gen
    )
