"""``build_mlp``: the depth-L probe network of the design, deterministic for a seed.

Layer ``l`` is one block: ``Linear(width, width)`` (its output is the pre-activation) then
the activation (its output is the layer output). Biases start at zero, or ``N(0, bias_var)``
drawn from a generator of their own (the weights of a seed do not depend on bias_var).
Under emulated reduced precision the weights are stored rounded and each block rounds its
pre-activation and output (and their gradients) to the target dtype.
"""

import torch
from torch import nn

from stability.core.activations import get_activation
from stability.core.config import MLPConfig
from stability.core.emulation import round_to, round_with_grad
from stability.core.inits import get_init, init_linear_, lsuv_rescale_

LSUV_BATCH = 512
BIAS_SEED_OFFSET = 2_000_003  # apart from the input batch (seed + 1_000_003)


class MLPBlock(nn.Module):
    """One layer of the probe network: Linear, then activation, optional rounding after each."""

    def __init__(
        self, width: int, activation: str, bias: bool, round_dtype: torch.dtype | None
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width, bias=bias)
        self.activation = get_activation(activation).factory()
        self.round_dtype = round_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear(x)
        if self.round_dtype is not None:
            h = round_with_grad(h, self.round_dtype)
        a: torch.Tensor = self.activation(h)
        if self.round_dtype is not None:
            a = round_with_grad(a, self.round_dtype)
        return a


class MLP(nn.Module):
    """A stack of ``MLPBlock``; keeps its config so results can always say what ran."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        round_dtype = config.precision.round_dtype
        self.blocks = nn.ModuleList(
            MLPBlock(config.width, config.activation, config.bias, round_dtype)
            for _ in range(config.depth)
        )

    @property
    def layers(self) -> list[MLPBlock]:
        """The blocks, typed: layer ``l`` (1-based) is ``layers[l - 1]``."""
        return [b for b in self.blocks if isinstance(b, MLPBlock)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def build_mlp(config: MLPConfig) -> MLP:
    """Build and initialise the probe network for ``config`` on its device and dtype."""
    gen = torch.Generator().manual_seed(config.seed)
    model = MLP(config)
    for block in model.layers:
        init_linear_(block.linear, config.init, gen)
    if config.bias_var > 0:
        bias_gen = torch.Generator().manual_seed(config.seed + BIAS_SEED_OFFSET)
        with torch.no_grad():
            for block in model.layers:
                if block.linear.bias is not None:
                    block.linear.bias.normal_(0.0, config.bias_var**0.5, generator=bias_gen)
    if get_init(config.init).data_driven:
        apply_lsuv_(model, torch.randn(LSUV_BATCH, config.width, generator=gen))
    precision = config.precision
    if precision.round_dtype is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(round_to(p, precision.round_dtype))
    return model.to(device=config.device, dtype=precision.compute_dtype)


def apply_lsuv_(model: MLP, x: torch.Tensor) -> None:
    """LSUV: rescale the Linear layers, in order, to unit pre-activation variance on ``x``."""
    layers = model.layers

    def forward_to(i: int, inp: torch.Tensor) -> torch.Tensor:
        for block in layers[:i]:
            inp = block(inp)
        out: torch.Tensor = layers[i].linear(inp)
        return out

    lsuv_rescale_([b.linear for b in layers], forward_to, x)


def input_batch(config: MLPConfig, batch: int) -> torch.Tensor:
    """The probe input: ``x ~ N(0, 1)`` of shape (batch, width), seeded apart from the weights."""
    gen = torch.Generator().manual_seed(config.seed + 1_000_003)
    x = torch.randn(batch, config.width, generator=gen)
    precision = config.precision
    if precision.round_dtype is not None:
        x = round_to(x, precision.round_dtype)
    return x.to(device=config.device, dtype=precision.compute_dtype)
