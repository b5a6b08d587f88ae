"""A stack's weight gradient on CPU without subnormal inputs: an exact power-of-two rescale.

In exploding or saturating networks (selu with kaiming: pre-activations near -80, where
``exp`` is below float32's smallest normal) the pre-activation gradients hold subnormal
floats. On Intel CPUs every FMA that reads one takes a microcode assist: the weight-gradient
``bmm`` of such a layer ran at 19-29 ms against 1.0 ms on normal data (issue 27).

Flushing them to zero would change what the tool measures. Multiplying the gradient by
``2**s`` does not: a power of two moves every float, subnormals included, to another float
exactly, and every product and partial sum of the GEMM with it, as long as nothing
overflows (``s`` is chosen from the operands' bounds so that nothing can). Dividing the
result by ``2**s`` is exact again wherever the result is a normal float. So where the
unscaled GEMM's arithmetic stays in the normal range the result is the same bit for bit,
and where it did not, the rescaled one is the more accurate: only the final rounding of
results that are themselves subnormal remains.
"""

import math

import torch

HEADROOM_LOG2 = 100  # the largest product or sum of the rescaled GEMM stays below 2**100
MAX_SHIFT = 100  # 2**s and 2**-s are float32 normals; 2**23 already lifts every subnormal
# Gradients smaller than this take the plain GEMM: the rescale's four extra kernels cost
# ~30 us a layer, 6 % of a width-64 stack of 8 (batch 64), where assists cost little.
RESCALE_FROM = 2**17  # elements of the stack's gradient (2 cells at batch and width 256)


def shift_for(input_bound: float, grad_bound: float, terms: int) -> int:
    """The power of two ``s`` for ``inputs^T @ (grad * 2**s)``: the largest (up to
    ``MAX_SHIFT``) that keeps ``terms * input_bound * grad_bound * 2**s`` under
    ``2**HEADROOM_LOG2``; 0 (no rescale) where the bounds are zero, not finite, or leave no
    room."""
    bound = terms * input_bound * grad_bound
    if not math.isfinite(bound) or bound <= 0:
        return 0
    return max(0, min(MAX_SHIFT, HEADROOM_LOG2 - math.ceil(math.log2(bound))))


def rescales(grad: torch.Tensor) -> bool:
    """Whether ``weight_gradient`` rescales this gradient (so its caller needs the bound)."""
    on_cpu = grad.device.type == "cpu" and grad.dtype == torch.float32
    return on_cpu and grad.numel() >= RESCALE_FROM


def weight_gradient(inputs: torch.Tensor, grad: torch.Tensor, input_bound: float) -> torch.Tensor:
    """``inputs^T @ grad`` per cell, ``(S, in, out)`` from ``(S, batch, in)`` and
    ``(S, batch, out)``: autograd's weight-gradient GEMM. On CPU in float32 the gradient is
    rescaled by an exact power of two first (``input_bound`` bounds ``|inputs|``, e.g. the
    forward's amax), so that no FMA reads a subnormal gradient wherever the bounds leave
    room for ``2**23``; elsewhere (and for gradients under ``RESCALE_FROM`` elements), the
    plain GEMM."""
    x_t = inputs.detach().transpose(1, 2)
    g = grad.detach()
    if not rescales(g):
        return torch.bmm(x_t, g)
    grad_bound = max(float(g.amax()), -float(g.amin()))
    shift = shift_for(input_bound, grad_bound, g.shape[1])
    if shift == 0:
        return torch.bmm(x_t, g)
    out = torch.bmm(x_t, g * 2.0**shift)
    return out.mul_(2.0**-shift)
