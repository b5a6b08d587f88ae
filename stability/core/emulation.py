"""Reduced precision emulated in float32: round at layer boundaries, count what is lost.

Rounding a float32 tensor to float16 and back reproduces what storing it in float16 does:
values beyond the range become inf, tiny values become subnormal or flush to zero. The
backward pass rounds the incoming gradient the same way, so vanishing gradients underflow
where they would on a GPU. Compute in between stays float32 (documented difference from
native: no rounding inside the matmul accumulation).
"""

from dataclasses import dataclass

import torch

from stability.core.dtypes import DType


def round_to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round a tensor to ``dtype`` and back to its own dtype (no gradient semantics)."""
    return x.to(dtype).to(x.dtype)


class _RoundTo(torch.autograd.Function):
    """Identity up to rounding: forward rounds values, backward rounds gradients."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor:
        ctx.dtype = dtype  # type: ignore[attr-defined]
        return round_to(x, dtype)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        return round_to(grad, ctx.dtype), None  # type: ignore[attr-defined]


def round_with_grad(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Differentiable rounding: values and gradients both pass through ``dtype``."""
    out: torch.Tensor = _RoundTo.apply(x, dtype)  # type: ignore[no-untyped-call]
    return out


@dataclass(frozen=True)
class PrecisionEvents:
    """Fractions of a tensor's finite values that a reduced-precision store would damage."""

    overflow: float  # finite in float32, inf after rounding
    subnormal: float  # nonzero and below the smallest normal after rounding
    flush_to_zero: float  # nonzero in float32, exactly zero after rounding

    def as_dict(self) -> dict[str, float]:
        return {
            "overflow_frac": self.overflow,
            "subnormal_frac": self.subnormal,
            "flush_frac": self.flush_to_zero,
        }


def precision_event_counts(x: torch.Tensor, target: DType) -> torch.Tensor:
    """Counts (overflow, subnormal, flush) as a 3-vector tensor; no host sync.

    ``x`` is the value before rounding (float32 when emulating). For a tensor already in the
    target dtype (native), overflow is counted as inf values and flush cannot be seen.
    """
    if x.dtype == target.dtype:
        mag = x.abs()
        overflow = torch.isinf(x).sum()
        subnormal = ((mag > 0) & (mag < target.tiny)).sum()
        flush = torch.zeros((), dtype=overflow.dtype, device=x.device)
        return torch.stack([overflow, subnormal, flush])
    rounded = x.to(target.dtype)
    finite_before = torch.isfinite(x)
    rmag = rounded.abs()
    overflow = (torch.isinf(rounded) & finite_before).sum()
    subnormal = ((rmag > 0) & (rmag < target.tiny)).sum()
    flush = ((rmag == 0) & (x != 0)).sum()
    return torch.stack([overflow, subnormal, flush])
