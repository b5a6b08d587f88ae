"""Dtype registry: name -> torch dtype, its range limits, and whether it runs natively.

On CUDA every registered dtype runs natively. On CPU, float16/bfloat16 matmuls are about
100x slower than float32, so they are *emulated*: compute in float32 and round to the
target dtype at every layer boundary (see ``stability.core.emulation``). Every result says which.
"""

from dataclasses import dataclass
from typing import Literal

import torch

from stability.core.registry import lookup

PrecisionMode = Literal["native", "emulated"]


@dataclass(frozen=True)
class DType:
    """One floating-point format and its limits (``torch.finfo``)."""

    name: str
    dtype: torch.dtype
    reduced: bool  # float16/bfloat16: emulated on CPU

    @property
    def max(self) -> float:
        """Largest finite value."""
        return float(torch.finfo(self.dtype).max)

    @property
    def tiny(self) -> float:
        """Smallest positive normal value: below it values go subnormal."""
        return float(torch.finfo(self.dtype).tiny)

    @property
    def smallest_subnormal(self) -> float:
        """Smallest positive value at all: below about half of it values flush to zero."""
        return float(torch.finfo(self.dtype).smallest_normal) * float(torch.finfo(self.dtype).eps)

    @property
    def eps(self) -> float:
        """Spacing of values just above 1."""
        return float(torch.finfo(self.dtype).eps)

    def mode(self, device: str) -> PrecisionMode:
        """Native on CUDA or for float32/float64; emulated for reduced precision on CPU."""
        return "emulated" if self.reduced and not device.startswith("cuda") else "native"

    def compute_dtype(self, device: str) -> torch.dtype:
        """The dtype tensors actually hold: float32 when emulating."""
        return torch.float32 if self.mode(device) == "emulated" else self.dtype


@dataclass(frozen=True)
class Precision:
    """A dtype on a device, resolved once: what tensors hold and whether rounding is emulated.

    ``MLPConfig.precision`` builds it; code downstream asks it instead of looking the dtype
    up again and re-deriving the mode.
    """

    format: DType
    device: str

    @property
    def mode(self) -> PrecisionMode:
        return self.format.mode(self.device)

    @property
    def emulated(self) -> bool:
        """Reduced precision on CPU: compute in float32, round at every layer boundary."""
        return self.mode == "emulated"

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype tensors hold (float32 when emulating)."""
        return self.format.compute_dtype(self.device)

    @property
    def round_dtype(self) -> torch.dtype | None:
        """The dtype to round to at layer boundaries, or None when running natively."""
        return self.format.dtype if self.emulated else None


DTYPES: dict[str, DType] = {
    d.name: d
    for d in [
        DType("float64", torch.float64, reduced=False),
        DType("float32", torch.float32, reduced=False),
        DType("bfloat16", torch.bfloat16, reduced=True),
        DType("float16", torch.float16, reduced=True),
    ]
}


def get_dtype(name: str) -> DType:
    """Look up a dtype by its torch name."""
    return lookup("dtype", name, DTYPES)
