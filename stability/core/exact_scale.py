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
results that are themselves subnormal remains. The rescale runs only where a sample of the
gradient holds subnormals: elsewhere it would cost 3-6 % of a stack for nothing.
"""

import math
from collections.abc import Callable

import torch

HEADROOM_LOG2 = 100  # the largest product or sum of the rescaled GEMM stays below 2**100
MAX_SHIFT = 100  # 2**s and 2**-s are float32 normals; 2**23 already lifts every subnormal
# Gradients smaller than this take the plain GEMM without the sample look: looking cost
# the five width-64 stacks of 8 (batch 64) 4.9 % (177 against 169 ms, one thread, A/B
# median of 8), where assists cost little.
RESCALE_FROM = 2**17  # elements of the stack's gradient (2 cells at batch and width 256)
# The rescale costs ~390 us a layer of 8 cells at width 256 (bounds, three passes), 3-6 %
# of a stack that holds no subnormal; so a sample, each cell's first 1/32 of its batch rows
# (i.i.d. examples), is looked at first: ~35 us. A subnormal costs ~5 us of assists, so
# gradients with so few that the sample misses them all lose about what the look costs.
SAMPLE_SHARE = 32
TINY = torch.finfo(torch.float32).tiny


def shift_for(input_bound: float, grad_bound: float, terms: int) -> int:
    """The power of two ``s`` for ``inputs^T @ (grad * 2**s)``: the largest (up to
    ``MAX_SHIFT``) that keeps the rescaled gradient and the GEMM's sums (``terms *
    input_bound * grad_bound * 2**s``) under ``2**HEADROOM_LOG2``; 0 (no rescale) where the
    bounds are zero, not finite, or leave no room."""
    bound = max(terms * input_bound * grad_bound, grad_bound)
    if not math.isfinite(bound) or min(input_bound, grad_bound) <= 0:
        return 0
    return max(0, min(MAX_SHIFT, HEADROOM_LOG2 - math.ceil(math.log2(bound))))


def rescales(grad: torch.Tensor) -> bool:
    """Whether ``weight_gradient`` looks at this gradient for subnormals at all."""
    on_cpu = grad.device.type == "cpu" and grad.dtype == torch.float32
    return on_cpu and grad.numel() >= RESCALE_FROM


def has_subnormals(grad: torch.Tensor) -> bool:
    """Whether the first ``1 / SAMPLE_SHARE`` of each cell's batch rows holds a subnormal."""
    sample = grad[:, : max(1, grad.shape[1] // SAMPLE_SHARE)]
    return bool(((sample != 0) & (sample.abs() < TINY)).any())


def weight_gradient(
    inputs: torch.Tensor, grad: torch.Tensor, input_bound: Callable[[], float]
) -> torch.Tensor:
    """``inputs^T @ grad`` per cell, ``(S, in, out)`` from ``(S, batch, in)`` and
    ``(S, batch, out)``: autograd's weight-gradient GEMM. On CPU in float32, where the
    gradient holds subnormals (``has_subnormals``), ``rescaled_bmm`` (``input_bound()``,
    asked only then, bounds ``|inputs|``); elsewhere (and for gradients under
    ``RESCALE_FROM`` elements), the plain GEMM."""
    x_t = inputs.detach().transpose(1, 2)
    g = grad.detach()
    if not rescales(g) or not has_subnormals(g):
        return torch.bmm(x_t, g)
    return rescaled_bmm(x_t, g, input_bound())


def rescaled_bmm(x_t: torch.Tensor, g: torch.Tensor, input_bound: float) -> torch.Tensor:
    """``x_t @ g`` with ``g`` rescaled by an exact power of two first (``input_bound`` bounds
    ``|x_t|``, e.g. the forward's amax), so that no FMA reads a subnormal wherever the
    bounds leave room for ``2**23``: the plain GEMM's bits where its arithmetic stays normal."""
    grad_bound = max(float(g.amax()), -float(g.amin()))
    shift = shift_for(input_bound, grad_bound, g.shape[1])
    if shift == 0:
        return torch.bmm(x_t, g)
    if not g.is_contiguous():  # an expanded gradient cannot be scaled where it lies
        return torch.bmm(x_t, g * 2.0**shift).mul_(2.0**-shift)
    # Scaled in place and back: both steps are exact, so autograd, which goes on to use
    # this very tensor for the input gradient, sees its own bits again. A copy would cost
    # three times the pass (a fresh 2 MB per layer at 8 cells of width 256).
    g.mul_(2.0**shift)
    out = torch.bmm(x_t, g)
    g.mul_(2.0**-shift)
    return out.mul_(2.0**-shift)
