"""Initialisation registry: name -> in-place init of a weight, and the variance it aims for.

``sigma_w^2 = fan_in * Var(W)`` is what mean-field theory needs; each init states
``Var(W)`` as a function of (fan_in, fan_out) so theory and properties never re-derive it.
LSUV is data-driven and states no variance: its target is unit output variance.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from stability.core.registry import lookup

NOTES_NORMAL_STD = 0.01  # the notes' default N(0, 0.01^2)
LSUV_TOLERANCE = 0.1
LSUV_MAX_PASSES = 10

InitFn = Callable[[torch.Tensor, torch.Generator], None]
VarianceFn = Callable[[int, int], float]


@dataclass(frozen=True)
class Init:
    """One weight initialisation: how to draw it and the weight variance it aims for."""

    name: str
    apply: InitFn  # fills a (fan_out, fan_in) weight in place
    variance: VarianceFn | None  # Var(W) given (fan_in, fan_out); None if data-driven
    data_driven: bool = False
    # Draws each entry in turn from the generator, and ``apply`` takes a (layers, fan_out,
    # fan_in) block of equal layers as well: one call may stand for a loop over the layers
    # (whether it does bit for bit on this torch is for the caller to check).
    entrywise: bool = False


def _normal(std: Callable[[int, int], float]) -> InitFn:
    def fill(weight: torch.Tensor, gen: torch.Generator) -> None:
        fan_out, fan_in = weight.shape[-2:]
        with torch.no_grad():
            weight.normal_(0.0, std(fan_in, fan_out), generator=gen)

    return fill


def _uniform(bound: Callable[[int, int], float]) -> InitFn:
    def fill(weight: torch.Tensor, gen: torch.Generator) -> None:
        fan_out, fan_in = weight.shape[-2:]
        b = bound(fan_in, fan_out)
        with torch.no_grad():
            weight.uniform_(-b, b, generator=gen)

    return fill


def _orthogonal(weight: torch.Tensor, gen: torch.Generator) -> None:
    """Haar-random semi-orthogonal matrix: QR of a Gaussian with the sign of R's diagonal fixed."""
    rows, cols = weight.shape
    flat = torch.randn(max(rows, cols), min(rows, cols), generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(flat)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if rows < cols:
        q = q.T
    with torch.no_grad():
        weight.copy_(q.to(weight.dtype))


def _orthogonal_variance(fan_in: int, fan_out: int) -> float:
    # Orthonormal rows (or columns): the squared entries sum to min(fan_in, fan_out).
    return min(fan_in, fan_out) / (fan_in * fan_out)


INITS: dict[str, Init] = {
    i.name: i
    for i in [
        Init(
            "normal",
            _normal(lambda fi, fo: NOTES_NORMAL_STD),
            lambda fi, fo: NOTES_NORMAL_STD**2,
            entrywise=True,
        ),
        Init("standard_normal", _normal(lambda fi, fo: 1.0), lambda fi, fo: 1.0, entrywise=True),
        # nn.Linear's own reset: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
        Init(
            "torch_default",
            _uniform(lambda fi, fo: 1.0 / math.sqrt(fi)),
            lambda fi, fo: 1.0 / (3.0 * fi),
            entrywise=True,
        ),
        Init(
            "xavier_normal",
            _normal(lambda fi, fo: math.sqrt(2.0 / (fi + fo))),
            lambda fi, fo: 2.0 / (fi + fo),
            entrywise=True,
        ),
        Init(
            "xavier_uniform",
            _uniform(lambda fi, fo: math.sqrt(6.0 / (fi + fo))),
            lambda fi, fo: 2.0 / (fi + fo),
            entrywise=True,
        ),
        Init(
            "kaiming_normal",
            _normal(lambda fi, fo: math.sqrt(2.0 / fi)),
            lambda fi, fo: 2.0 / fi,
            entrywise=True,
        ),
        Init(
            "kaiming_uniform",
            _uniform(lambda fi, fo: math.sqrt(6.0 / fi)),
            lambda fi, fo: 2.0 / fi,
            entrywise=True,
        ),
        Init(
            "lecun_normal",
            _normal(lambda fi, fo: math.sqrt(1.0 / fi)),
            lambda fi, fo: 1.0 / fi,
            entrywise=True,
        ),
        Init("orthogonal", _orthogonal, _orthogonal_variance),
        # LSUV starts orthogonal; build_mlp then rescales each layer on data.
        Init("lsuv", _orthogonal, None, data_driven=True),
    ]
}


def get_init(name: str) -> Init:
    """Look up an init by its lowercase torch-style name."""
    return lookup("init", name, INITS)


def sigma_w2(init_name: str, fan_in: int, fan_out: int) -> float | None:
    """Mean-field weight scale ``fan_in * Var(W)``; None for data-driven inits."""
    variance = get_init(init_name).variance
    return None if variance is None else fan_in * variance(fan_in, fan_out)


def lsuv_rescale_(
    layers: list[nn.Linear],
    forward_to: Callable[[int, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
) -> None:
    """Mishkin & Matas (2016): rescale each layer until its output variance is 1 +- tolerance.

    ``forward_to(i, x)`` returns the output of layer ``i`` (pre-activation) for input ``x``.
    At most ``LSUV_MAX_PASSES`` rescalings per layer; a layer with zero output is left alone.
    """
    with torch.no_grad():
        for i, layer in enumerate(layers):
            for _ in range(LSUV_MAX_PASSES):
                var = float(forward_to(i, x).var())
                if not math.isfinite(var) or var == 0.0 or abs(var - 1.0) < LSUV_TOLERANCE:
                    break
                layer.weight.mul_(1.0 / math.sqrt(var))


def init_linear_(layer: nn.Linear, init_name: str, gen: torch.Generator) -> None:
    """Initialise a Linear's weight with the named init and zero its bias."""
    get_init(init_name).apply(layer.weight, gen)
    if layer.bias is not None:
        with torch.no_grad():
            layer.bias.zero_()
