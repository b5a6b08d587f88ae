"""Activation registry: name -> module factory, torch gain, and the Taylor data at zero.

The notes argue that an activation keeps signals stable when it looks like the identity
near 0 (value 0, slope 1). Each entry records its value and slope at 0 so properties and
the report can check that claim, and its torch gain so inits can be compared.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from stability.core.registry import lookup

LEAKY_RELU_SLOPE = 0.01
SELU_ALPHA = 1.6732632423543772
SELU_LAMBDA = 1.0507009873554805


class ScaledLogistic(nn.Module):
    """The notes' fix for sigmoid: 4*sigmoid(x) - 2 = 2*tanh(x/2), identity-like near 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4.0 * torch.sigmoid(x) - 2.0


@dataclass(frozen=True)
class Activation:
    """What the project knows about one activation function."""

    name: str
    factory: Callable[[], nn.Module]
    gain: float | None  # torch.nn.init.calculate_gain, None where torch defines none
    value_at_0: float
    slope_at_0: float  # for relu: the right derivative
    cubic_at_0: float | None  # coefficient of x^3 in the Taylor series at 0, if smooth


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("identity", nn.Identity, 1.0, 0.0, 1.0, 0.0),
        Activation("relu", nn.ReLU, math.sqrt(2.0), 0.0, 1.0, 0.0),
        Activation(
            "leaky_relu",
            lambda: nn.LeakyReLU(LEAKY_RELU_SLOPE),
            math.sqrt(2.0 / (1.0 + LEAKY_RELU_SLOPE**2)),
            0.0,
            1.0,
            0.0,
        ),
        Activation("tanh", nn.Tanh, 5.0 / 3.0, 0.0, 1.0, -1.0 / 3.0),
        Activation("sigmoid", nn.Sigmoid, 1.0, 0.5, 0.25, -1.0 / 48.0),
        Activation("scaled_logistic", ScaledLogistic, None, 0.0, 1.0, -1.0 / 12.0),
        Activation("gelu", nn.GELU, None, 0.0, 0.5, None),
        Activation("silu", nn.SiLU, None, 0.0, 0.5, None),
        Activation("elu", nn.ELU, None, 0.0, 1.0, None),
        Activation("selu", nn.SELU, 0.75, 0.0, SELU_LAMBDA, None),
        Activation("softplus", nn.Softplus, None, math.log(2.0), 0.5, None),
    ]
}


def get_activation(name: str) -> Activation:
    """Look up an activation by its lowercase torch-style name."""
    return lookup("activation", name, ACTIVATIONS)


def activation_fn(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation as a plain tensor function (for quadrature and plots)."""
    module = get_activation(name).factory()
    return module.__call__
