"""A cell's square layers drawn in one call, where that is the layer loop's bits.

``build_mlp`` draws each layer's weights with its own call on the cell's generator. For an
init that draws entry after entry (``Init.entrywise``), one call over a contiguous
``(depth, width, width)`` block consumes the generator in the same order, so it can stand
for the loop: at width 64 the 50 calls' own cost is about a third of a cell's draws
(issue 27). Whether it does, bit for bit, is torch's business: its vectorised normal fill
works in chunks of 16, so at a layer size that is not a multiple of 16 the block's stream
differs. So each (init, width, dtype) is checked once per process, on a small block, and
drawn layer by layer where the check fails; large layers, where the calls' cost is
negligible, are always drawn layer by layer.
"""

import functools

import torch

from stability.core.inits import Init, get_init

BLOCK_DRAW_BELOW = 2**14  # elements a layer: above this the per-call cost is under 10 %
CHECK_LAYERS = 3


@functools.cache
def block_draw_matches(init_name: str, width: int, dtype: torch.dtype) -> bool:
    """Whether one draw of a ``(CHECK_LAYERS, width, width)`` block equals the layer loop's
    draws bit for bit on this torch (one check per process and key)."""
    init = get_init(init_name)
    block = torch.empty(CHECK_LAYERS, width, width, dtype=dtype)
    init.apply(block, torch.Generator().manual_seed(0))
    layers = torch.empty(CHECK_LAYERS, width, width, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    for layer in layers:
        init.apply(layer, gen)
    return torch.equal(block, layers)


def fill_layers(init: Init, weights: torch.Tensor, gen: torch.Generator) -> None:
    """Fill ``(depth, width, width)`` CPU ``weights`` as the layer loop would, bit for bit:
    in one call where ``block_draw_matches`` (through a contiguous copy if ``weights`` is
    a strided slice, since torch's normal fill draws another stream there), else layer by
    layer."""
    _, rows, cols = weights.shape
    one_call = (
        init.entrywise
        and rows == cols
        and rows * cols < BLOCK_DRAW_BELOW
        and block_draw_matches(init.name, rows, weights.dtype)
    )
    if not one_call:
        for layer in weights:
            init.apply(layer, gen)
    elif weights.is_contiguous():
        init.apply(weights, gen)
    else:
        block = torch.empty(weights.shape, dtype=weights.dtype)
        init.apply(block, gen)
        weights.copy_(block)
