"""Which modules are matmuls, and their op on given operands: what fp8 recipes quantise.

A matmul module is ``nn.Linear``, transformers' ``Conv1D`` or an ``nn.Conv*``: a module with
a weight of two or more dimensions, the ones fp8 kernels replace (norms, embeddings and
elementwise ops stay in the carrier). Recipes scale a weight per row of its (out, reduction)
matrix, and an activation per slice of its reduction dimension, so each kind is viewed the
same way: a Linear's input features, a conv's input channels moved last.
"""

import torch
import torch.nn.functional as F
from torch import nn


def is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd)


def is_conv1d_hf(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2): a Linear whose weight is stored (in, out)."""
    return type(module).__name__ == "Conv1D"


def is_matmul(module: nn.Module) -> bool:
    """Linear, Conv1D or a conv: a module with its own weight of two or more dimensions."""
    w = getattr(module, "weight", None)
    return (
        isinstance(w, torch.Tensor)
        and w.dim() >= 2
        and (isinstance(module, nn.Linear) or is_conv(module) or is_conv1d_hf(module))
    )


def weight_matrix(module: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """``w`` (the module's weight or a copy) as (out, reduction)."""
    if is_conv1d_hf(module):
        return w.t()
    return w.reshape(w.shape[0], -1) if w.dim() > 2 else w


def weight_from_matrix(module: nn.Module, wm: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The inverse of ``weight_matrix``: back to the weight's own layout ``shape``."""
    return wm.t() if is_conv1d_hf(module) else wm.reshape(shape)


def channels_last(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """An activation with its reduction (conv: channel) dimension last."""
    return x.movedim(1, -1) if is_conv(module) and x.dim() > 1 else x


def channels_back(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The inverse of ``channels_last``."""
    return x.movedim(-1, 1) if is_conv(module) and x.dim() > 1 else x


def matmul_op(
    module: nn.Module, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None
) -> torch.Tensor:
    """The module's own op on the operands given (differentiable in all three)."""
    if is_conv(module):
        y: torch.Tensor = module._conv_forward(x, w, b)  # type: ignore[operator]
        return y
    if is_conv1d_hf(module):
        y = x @ w
        return y + b if b is not None else y
    return F.linear(x, w, b)
