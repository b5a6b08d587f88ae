"""Any ``nn.Module`` under float16/bfloat16 emulation, for the length of a ``with`` block.

The project's MLP rounds at its own layer boundaries (``core.model``); a user's network has
no such places, so here they are made with hooks, as AMP would see the run: the parameters
hold their values rounded to the dtype (float32 masters put back on exit, gradients kept,
as ``train.trainer.Trainer.half_weights`` does), the model's floating inputs are rounded,
and every leaf module's output is rounded on the way forward and its gradient on the way
back (``round_with_grad``). Values the dtype cannot hold become inf, flush to zero or lose
digits exactly where a float16 run would lose them, on a CPU without float16 kernels.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from stability.core.dtypes import DTYPES, get_dtype
from stability.core.emulation import round_to, round_with_grad
from stability.errors import StabilityError


def _rounded(obj: Any, dtype: torch.dtype) -> Any:
    if isinstance(obj, torch.Tensor) and obj.is_floating_point():
        return round_with_grad(obj, dtype)
    if isinstance(obj, tuple):
        return tuple(_rounded(o, dtype) for o in obj)
    if isinstance(obj, list):
        return [_rounded(o, dtype) for o in obj]
    return obj


@contextmanager
def emulate(model: nn.Module, dtype: str = "float16") -> Iterator[nn.Module]:
    """Run ``model`` as if in ``dtype`` inside the block (see the module docstring)."""
    target = get_dtype(dtype)
    if not target.reduced:
        reduced = sorted(n for n, d in DTYPES.items() if d.reduced)
        raise StabilityError(
            f"emulate needs a reduced dtype; got {dtype!r}, expected one of {reduced}"
        )
    torch_dtype = target.dtype
    params = list(model.parameters())
    masters = [p.detach().clone() for p in params]
    handles = [
        model.register_forward_pre_hook(lambda m, args: _rounded(args, torch_dtype)),
        *[
            leaf.register_forward_hook(lambda m, a, out: _rounded(out, torch_dtype))
            for leaf in model.modules()
            if not any(True for _ in leaf.children())
        ],
    ]
    with torch.no_grad():
        for p in params:
            p.copy_(round_to(p, torch_dtype))
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for p, master in zip(params, masters, strict=True):
                p.copy_(master)
