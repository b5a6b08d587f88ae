"""float16 and bfloat16 facts shared by the precision properties: rounding thresholds, edges.

The thresholds follow from the reference facts (DESIGN.md) and round-to-nearest-even; the
edge values sit on each side of every threshold, so a check that runs on them exercises
every rounding class (overflow, flush to zero, subnormal, ties) whatever hypothesis draws.
"""

import math

import torch

from stability.core.dtypes import get_dtype

FP16 = get_dtype("float16")
BF16 = get_dtype("bfloat16")

# Round-to-nearest-even thresholds of float16 that follow from the facts: a value overflows
# at max + half an ulp (2^5 / 2 = 16; the tie goes up, to the even 2^16 = inf), flushes to 0
# at or below half the smallest subnormal (the tie goes to the even 0), and becomes
# subnormal below tiny minus half a subnormal ulp (that tie goes up, to the even tiny).
FP16_OVERFLOW_AT = 65520.0
FP16_FLUSH_AT_OR_BELOW = 2.0**-25
FP16_SUBNORMAL_BELOW = 2.0**-14 - 2.0**-25
BF16_OVERFLOW_AT = (2.0 - 2.0**-8) * 2.0**127
BF16_FLUSH_AT_OR_BELOW = 2.0**-134
BF16_SUBNORMAL_BELOW = 2.0**-126 - 2.0**-134
THRESHOLDS = {
    "float16": (FP16_OVERFLOW_AT, FP16_FLUSH_AT_OR_BELOW, FP16_SUBNORMAL_BELOW),
    "bfloat16": (BF16_OVERFLOW_AT, BF16_FLUSH_AT_OR_BELOW, BF16_SUBNORMAL_BELOW),
}

# float16 edge values (as float32): each side of every threshold, one float32 ulp apart.
_EDGES = [
    65504.0,
    FP16_OVERFLOW_AT,
    2.0**-24,
    2.0**-25,
    FP16_SUBNORMAL_BELOW,
    2.0**-14,
    1.0 + 2.0**-11,  # a tie between 1 and 1 + eps: goes to the even 1
    1.0 + 3 * 2.0**-11,  # a tie between 1 + eps and 1 + 2 eps: goes to 1 + 2 eps
]
FP16_EDGES = torch.tensor(sorted({v * s for v in _EDGES for s in (1.0, -1.0)}), dtype=torch.float32)
FP16_EDGES = torch.cat(
    [
        FP16_EDGES,
        torch.nextafter(FP16_EDGES, torch.full_like(FP16_EDGES, math.inf)),
        torch.nextafter(FP16_EDGES, torch.full_like(FP16_EDGES, -math.inf)),
        torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, 1e-45, 3e38]),
    ]
)
