"""Low-precision formats as first-class values: element grids, block scales, bits per value.

An ``Element`` is a small float grid (E4M3, E5M2, E3M2, E2M1); a ``LowpFormat`` is how a
tensor is stored in it: plain fp8 with a scale the recipe chooses, or microscaled blocks
(OCP MX v1.0: 32 elements share an E8M0 power-of-two scale; NVFP4: 16 share an E4M3 scale
under a per-tensor fp32 scale). Names resolve once, with one-line errors, like ``get_dtype``.
"""

from dataclasses import dataclass
from typing import Literal

import torch

from stability.core.registry import lookup

ScaleKind = Literal["recipe", "e8m0", "e4m3"]


@dataclass(frozen=True)
class Element:
    """One element grid: sign, ``ebits`` exponent bits (bias ``bias``), ``mbits`` mantissa bits.

    ``max`` is the largest finite value (E4M3's top mantissa pattern is NaN, so 448 not 480);
    ``overflow`` is what a value beyond it becomes in torch's cast: ``"saturate"`` (clamped
    to max, as torch's float8_e4m3fn cast and the MX element conversions do) or ``"inf"``.
    """

    name: str
    ebits: int
    mbits: int
    bias: int
    max: float
    overflow: Literal["saturate", "inf"]
    torch_dtype: torch.dtype | None  # None: torch has no cast (fp6, fp4)

    @property
    def bits(self) -> int:
        return 1 + self.ebits + self.mbits

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest normal binade: floor(log2(max)), the MX spec's emax_elem."""
        return int(torch.tensor(self.max).log2().floor())

    @property
    def overflows_at(self) -> float:
        """Half a top-binade step above max: a non-saturating cast of anything beyond it (or
        of it, when max's last mantissa bit is 1 and the tie rounds up) gives inf or NaN."""
        return self.max + 2.0 ** (self.emax - self.mbits) / 2

    @property
    def tie_overflows(self) -> bool:
        return int(self.max / 2.0 ** (self.emax - self.mbits)) % 2 == 1

    @property
    def smallest_normal(self) -> float:
        return 2.0**self.emin

    @property
    def smallest_subnormal(self) -> float:
        return 2.0 ** (self.emin - self.mbits)


ELEMENTS: dict[str, Element] = {
    e.name: e
    for e in [
        Element("e4m3", 4, 3, 7, 448.0, "saturate", torch.float8_e4m3fn),
        Element("e5m2", 5, 2, 15, 57344.0, "inf", torch.float8_e5m2),
        Element("e3m2", 3, 2, 3, 28.0, "saturate", None),
        Element("e2m1", 2, 1, 1, 6.0, "saturate", None),
    ]
}


@dataclass(frozen=True)
class LowpFormat:
    """How a tensor is stored: element grids forward and backward, and how it is scaled.

    ``block`` 0 with ``scale`` "recipe": plain fp8 whose scale the recipe picks (per tensor,
    per row, delayed). ``block`` 32 with "e8m0": OCP MX. ``block`` 16 with "e4m3": NVFP4.
    """

    name: str
    forward: Element
    backward: Element
    block: int
    scale: ScaleKind

    @property
    def bits_per_element(self) -> float:
        """Storage per value, the block scale shared out (8 bits per block)."""
        return self.forward.bits + (8 / self.block if self.block else 0.0)

    @property
    def blocked(self) -> bool:
        return self.block > 0


def _formats() -> dict[str, LowpFormat]:
    e = ELEMENTS
    return {
        f.name: f
        for f in [
            LowpFormat("float8_e4m3fn", e["e4m3"], e["e4m3"], 0, "recipe"),
            LowpFormat("float8_e5m2", e["e5m2"], e["e5m2"], 0, "recipe"),
            LowpFormat("hybrid", e["e4m3"], e["e5m2"], 0, "recipe"),
            LowpFormat("mxfp8_e4m3", e["e4m3"], e["e4m3"], 32, "e8m0"),
            LowpFormat("mxfp8_e5m2", e["e5m2"], e["e5m2"], 32, "e8m0"),
            LowpFormat("mxfp6_e3m2", e["e3m2"], e["e3m2"], 32, "e8m0"),
            LowpFormat("mxfp4_e2m1", e["e2m1"], e["e2m1"], 32, "e8m0"),
            LowpFormat("nvfp4", e["e2m1"], e["e2m1"], 16, "e4m3"),
        ]
    }


FORMATS = _formats()
ALIASES = {"e4m3": "float8_e4m3fn", "e5m2": "float8_e5m2", "mxfp8": "mxfp8_e4m3",
           "mxfp6": "mxfp6_e3m2", "mxfp4": "mxfp4_e2m1"}  # fmt: skip
NAMES = {**{n: n for n in FORMATS}, **ALIASES}


def get_format(name: str) -> LowpFormat:
    """Look a format up by name or alias (``e4m3``, ``mxfp8``, ``mxfp4``, ``hybrid``)."""
    return FORMATS[lookup("low-precision format", name, NAMES)]


def format_table() -> list[dict[str, object]]:
    """One row per element grid: bits, max, smallest normal and subnormal (docs, tests)."""
    return [
        {
            "element": e.name,
            "bits": e.bits,
            "exponent_bits": e.ebits,
            "mantissa_bits": e.mbits,
            "max": e.max,
            "smallest_normal": e.smallest_normal,
            "smallest_subnormal": e.smallest_subnormal,
            "emax": e.emax,
        }
        for e in ELEMENTS.values()
    ]
