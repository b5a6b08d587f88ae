"""Probe networks at any point (sigma_w^2, sigma_b^2) of the phase diagram, Gaussian or
orthogonal weights: the registry's unit-scale inits, rescaled.

The registry names inits by their fixed scale (``lecun_normal``: sigma_w^2 = 1,
``orthogonal``: sigma_w^2 = 1 on square layers); the edge of chaos needs every scale, so
the weights are drawn by those inits and multiplied by ``sqrt(sigma_w^2)`` (the ``gain`` of
``torch.nn.init.orthogonal_``). Biases come from ``MLPConfig.bias_var``.
"""

import math
from typing import Literal

import torch

from stability.core.config import MLPConfig
from stability.core.model import MLP, build_mlp

WeightLaw = Literal["gaussian", "orthogonal"]
WEIGHT_LAWS: dict[str, str] = {"gaussian": "lecun_normal", "orthogonal": "orthogonal"}


def scaled_mlp(
    activation: str,
    depth: int,
    width: int,
    sigma_w2: float,
    sigma_b2: float = 0.0,
    weights: WeightLaw = "gaussian",
    seed: int = 0,
    device: str = "cpu",
) -> MLP:
    """An MLP whose weights have ``fan_in * Var(W) = sigma_w2`` and biases ``N(0, sigma_b2)``."""
    config = MLPConfig(
        depth=depth,
        width=width,
        activation=activation,
        init=WEIGHT_LAWS[weights],
        bias=True,
        seed=seed,
        device=device,
        bias_var=float(sigma_b2),
    )
    model = build_mlp(config)
    with torch.no_grad():
        for block in model.layers:
            block.linear.weight.mul_(math.sqrt(sigma_w2))
    return model
