"""float64 comparison and autograd, shared by the loss properties.

Closed-form gradients are compared with autograd in float64 with one named tolerance, so a
difference is a wrong formula, never rounding.
"""

from collections.abc import Callable

import torch

F64 = torch.float64
F64_RTOL = 1e-9  # float64 closed form vs autograd: a handful of roundings apart
F64_ATOL = 1e-12

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def close64(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and equal within the float64 tolerances."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=F64_RTOL, atol=F64_ATOL)


def autograd(loss: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Gradient of ``loss(x).sum()`` w.r.t. x."""
    x = x.detach().clone().requires_grad_(True)
    loss(x).sum().backward()
    assert x.grad is not None
    return x.grad
