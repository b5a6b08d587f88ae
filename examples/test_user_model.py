"""A user's own pytest file: check a small model's numerics with stability.testing."""

import torch
from torch import nn

from stability.testing import assert_gradients_finite, assert_no_overflow, assert_variance_preserved


def test_my_model_is_numerically_healthy() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU())
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    x = torch.randn(256, 64)
    assert_variance_preserved(model, x, band=(-1, 1))  # each layer within 10x of layer 1
    assert_gradients_finite(model, x)
    assert_no_overflow(model, x, dtype="float16")  # would it survive float16?
