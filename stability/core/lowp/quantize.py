"""One format and recipe applied to a tensor: the values read back and what was lost.

``quantize`` scales (by the recipe, or per block), rounds to the element grid and scales
back, and keeps the element-domain values before and after rounding so the events are
counted where the format sees them: beyond what it holds (overflow: a non-saturating cast
would give inf or NaN; the saturating casts clamp it; a microscaled block saturates by
its spec, the floor of its scale exponent leaving amax / X up to twice 2^emax, so that is
counted as saturation, never overflow), at its max (saturation),
subnormal (underflow) and nonzero turned zero (flush).
"""

from dataclasses import dataclass

import torch

from stability.core.lowp.blocks import mx_quantize, nvfp4_quantize
from stability.core.lowp.formats import Element, LowpFormat
from stability.core.lowp.recipes import AmaxHistory, Recipe, scale_for
from stability.core.lowp.rounding import cast_element

EVENTS = ("overflow", "saturation", "underflow", "flush")


@dataclass(frozen=True)
class Quantized:
    """A tensor stored in a low-precision format and read back, with its element values."""

    values: torch.Tensor  # dequantised, in the input's dtype and shape
    scaled: torch.Tensor  # element-domain values before rounding (x times its scale)
    rounded: torch.Tensor  # element-domain values after rounding
    log2_scale: torch.Tensor  # log2 of the multiplier(s) used: one, per row or per block
    element: Element
    blocked: bool = False  # MX / NVFP4: elements saturate by the spec, so nothing overflows

    def event_counts(self) -> torch.Tensor:
        """(overflow, saturation, underflow, flush) counts over finite inputs; no host sync."""
        finite = torch.isfinite(self.scaled)
        mag = self.scaled.abs()
        qmag = self.rounded.abs()
        e = self.element
        beyond = (mag > e.overflows_at) | ((mag == e.overflows_at) & e.tie_overflows)
        return torch.stack([
            (finite & beyond & (not self.blocked)).sum(),
            (finite & (qmag == e.max)).sum(),
            (finite & (qmag > 0) & (qmag < e.smallest_normal)).sum(),
            (finite & (qmag == 0) & (mag > 0)).sum(),
        ])  # fmt: skip


def element_for(fmt: LowpFormat, backward: bool) -> Element:
    """The grid a tensor goes to: the format's backward one for gradients (HYBRID: E5M2)."""
    return fmt.backward if backward else fmt.forward


def recipe_name(fmt: LowpFormat, recipe: Recipe) -> str:
    """What scaled the tensor: the recipe for plain fp8, the block scale otherwise."""
    return f"block{fmt.block}" if fmt.blocked else recipe.name


def quantize(
    x: torch.Tensor,
    fmt: LowpFormat,
    recipe: Recipe,
    *,
    backward: bool = False,
    history: AmaxHistory | None = None,
) -> Quantized:
    """``x`` (float32 or float64) in ``fmt`` under ``recipe``: blocks along the last dim."""
    elem = element_for(fmt, backward)
    if fmt.scale == "e8m0":
        deq, scaled, q, log2s = mx_quantize(x, elem, fmt.block)
        return Quantized(deq, scaled, q, log2s, elem, blocked=True)
    if fmt.scale == "e4m3":
        deq, scaled, q, log2s = nvfp4_quantize(x, fmt.block)
        return Quantized(deq, scaled, q, log2s, elem, blocked=True)
    scale = scale_for(x, elem.max, recipe, history)
    scaled = x * scale
    q = cast_element(scaled, elem)
    return Quantized(q / scale, scaled, q, torch.log2(scale), elem)
