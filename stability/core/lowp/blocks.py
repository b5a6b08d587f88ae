"""Microscaled blocks along the last dimension: OCP MX (E8M0 scale) and NVFP4 (E4M3 scale).

OCP Microscaling Formats v1.0, section 6.3: a block of 32 shares
``X = 2**(floor(log2(amax)) - emax_elem)``, the exponent clamped to E8M0's range
[-127, 127]; each element is ``V / X`` rounded to the element grid (RNE) with saturation to
its max. Because the floor keeps ``amax / X`` in [2**emax, 2**(emax+1)), the largest values
of a block can exceed the element max and saturate (E4M3: amax/X up to 511 > 448).
A block whose amax is NaN or inf gets the NaN scale (E8M0 0xFF): every element NaN.

NVFP4 (blocks of 16, E2M1 elements): a per-tensor fp32 scale ``g = amax / (6 * 448)`` puts
every block scale ``amax_block / 6 / g`` inside E4M3's range; the block scale is stored in
E4M3, and elements are ``V / (scale_e4m3 * g)`` rounded to E2M1 with saturation.
A last dimension that is not a whole number of blocks is padded with zeros.
"""

import torch
import torch.nn.functional as F

from stability.core.lowp.formats import ELEMENTS, Element
from stability.core.lowp.rounding import cast_element, round_element

E8M0_MIN, E8M0_MAX = -127, 127


def _blocks(x: torch.Tensor, size: int) -> tuple[torch.Tensor, int]:
    """``x`` as ``(..., nblocks, size)``, zero-padded; and the padding to strip after."""
    pad = -x.shape[-1] % size
    if pad:
        x = F.pad(x, (0, pad))
    return x.reshape(*x.shape[:-1], x.shape[-1] // size, size), pad


def _unblock(b: torch.Tensor, pad: int) -> torch.Tensor:
    flat = b.reshape(*b.shape[:-2], b.shape[-2] * b.shape[-1])
    return flat[..., : flat.shape[-1] - pad] if pad else flat


def mx_scale_exponent(amax: torch.Tensor, elem: Element) -> torch.Tensor:
    """The spec's shared exponent per block, ``floor(log2(amax)) - emax``, clamped to E8M0.

    ``amax`` 0 gives the smallest scale (every element 0 anyway). Integer tensor."""
    _, exp = torch.frexp(amax)
    raw = torch.where(amax > 0, exp - 1 - elem.emax, torch.full_like(exp, E8M0_MIN))
    return torch.clamp(raw, E8M0_MIN, E8M0_MAX)


def mx_quantize(x: torch.Tensor, elem: Element, size: int = 32) -> tuple[torch.Tensor, ...]:
    """(dequantised, element-domain values before rounding, after, log2 scale per block)."""
    b, pad = _blocks(x, size)
    amax = b.abs().amax(dim=-1, keepdim=True)
    k = mx_scale_exponent(torch.nan_to_num(amax, nan=0.0, posinf=0.0), elem)
    bad = ~torch.isfinite(amax)
    # 2**-127 is a float32 subnormal; divide in two power-of-two steps so nothing flushes.
    half = torch.div(k, 2, rounding_mode="floor")
    scaled = torch.ldexp(torch.ldexp(b, -half), -(k - half))
    q = round_element(scaled, elem, saturate=True)
    q = torch.where(bad, torch.full_like(q, torch.nan), q)
    deq = torch.ldexp(torch.ldexp(q, half), k - half)
    return _unblock(deq, pad), _unblock(scaled, pad), _unblock(q, pad), (-k).to(x.dtype)


def nvfp4_quantize(x: torch.Tensor, size: int = 16) -> tuple[torch.Tensor, ...]:
    """(dequantised, element-domain values before rounding, after, log2 scale per block)."""
    e2m1, e4m3 = ELEMENTS["e2m1"], ELEMENTS["e4m3"]
    b, pad = _blocks(x, size)
    amax_t = x.abs().amax()
    g = torch.where(amax_t > 0, amax_t / (e2m1.max * e4m3.max), 1.0)
    block_scale = cast_element(b.abs().amax(dim=-1, keepdim=True) / e2m1.max / g, e4m3)
    decode = block_scale * g
    safe = torch.where(decode > 0, decode, 1.0)
    scaled = torch.where(decode > 0, b / safe, torch.zeros_like(b))
    q = round_element(scaled, e2m1, saturate=True)
    log2_scale = -torch.log2(safe)
    return _unblock(q * decode, pad), _unblock(scaled, pad), _unblock(q, pad), log2_scale
