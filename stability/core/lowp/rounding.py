"""Round-to-nearest-even onto a small float grid, in float32 arithmetic.

torch casts to float8_e4m3fn and float8_e5m2; fp6 (E3M2) and fp4 (E2M1) have no cast, so
``round_element`` rounds to any ``Element`` directly: the step of ``x``'s binade (never finer
than the subnormal step) is a power of two, so ``x / step`` is exact and ``torch.round``
(half to even) is the whole rounding. The property suite holds it bit-identical to torch's
casts on E4M3 and E5M2, which backs its use on the grids torch cannot check.
"""

import torch

from stability.core.lowp.formats import Element


def round_element(x: torch.Tensor, elem: Element, *, saturate: bool | None = None) -> torch.Tensor:
    """``x`` rounded to ``elem`` (RNE), in ``x``'s dtype (float32 or float64).

    Beyond ``elem.max``: clamped to +-max when saturating (``saturate`` None: the element's
    own rule, torch's), else +-inf. NaN stays NaN; +-inf saturates or stays inf likewise.
    """
    mag = x.abs()
    _, exp = torch.frexp(mag)  # mag = frac * 2**exp, frac in [0.5, 1): floor(log2) = exp - 1
    binade = torch.clamp(exp - 1, min=elem.emin)
    step = torch.ldexp(torch.ones_like(mag), binade - elem.mbits)
    q = torch.round(mag / step) * step
    sat = elem.overflow == "saturate" if saturate is None else saturate
    over = q > elem.max
    q = torch.where(over, torch.full_like(q, elem.max if sat else torch.inf), q)
    q = torch.where(torch.isinf(mag), torch.full_like(q, elem.max if sat else torch.inf), q)
    return torch.where(torch.isnan(x), x, torch.copysign(q, x))


def cast_element(x: torch.Tensor, elem: Element) -> torch.Tensor:
    """``x`` stored in ``elem`` and read back: torch's own cast where it has one (faster)."""
    if elem.torch_dtype is not None and x.dtype == torch.float32:
        return x.to(elem.torch_dtype).to(x.dtype)
    return round_element(x, elem)
