"""The frozen description of one probe network: plain strings and numbers only.

Strings (not callables) keep a config hashable, printable, usable as a DataFrame column
and drawable with ``st.sampled_from``. Validation happens once, here, with messages that
name the bad value and the valid choices.
"""

import math
import re
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

from stability.core.activations import ACTIVATIONS
from stability.core.dtypes import DTYPES, Precision, get_dtype
from stability.core.inits import INITS
from stability.core.registry import lookup
from stability.errors import StabilityError

DEVICES = ("cpu", "cuda")
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")  # 'cpu:1' names no second CPU to torch here
# Seeds are stored as SQLite's signed 64-bit INTEGER; torch generators take any value below
# 2**64, so the offsets added for inputs and data (about 10**6) still fit.
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class MLPConfig:
    """Depth-``depth`` stack of ``Linear(width, width)`` + activation blocks.

    ``seed`` fixes the weights (and LSUV's calibration batch); ``bias`` adds biases, zero
    unless ``bias_var`` (sigma_b^2 of the edge-of-chaos picture) draws them from
    ``N(0, bias_var)``. ``dtype`` is a registry name; on CPU, float16/bfloat16 are emulated.
    """

    depth: int = 50
    width: int = 256
    activation: str = "relu"
    init: str = "kaiming_normal"
    dtype: str = "float32"
    bias: bool = True
    seed: int = 0
    device: str = "cpu"
    bias_var: float = 0.0

    def __post_init__(self) -> None:
        lookup("activation", self.activation, ACTIVATIONS)
        lookup("init", self.init, INITS)
        lookup("dtype", self.dtype, DTYPES)
        _check_int("depth", self.depth, minimum=1)
        _check_int("width", self.width, minimum=1)
        _check_int("seed", self.seed, minimum=0)
        if self.seed > MAX_SEED:
            raise StabilityError(f"seed must be <= {MAX_SEED} (2**63 - 1), got {self.seed}")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device):
            raise StabilityError(
                f"unknown device {self.device!r}; expected one of {list(DEVICES)}, "
                "or 'cuda:N' for the N-th GPU"
            )

        _check_bias_var(self.bias_var, self.bias)

    @cached_property
    def precision(self) -> Precision:
        """The dtype resolved on the device, once (emulated or native)."""
        return Precision(get_dtype(self.dtype), self.device)

    def as_dict(self) -> dict[str, Any]:
        """Field name -> value, in declaration order (a DataFrame row).

        ``bias_var`` appears only when it is not 0: absent means 0, so every cell key, row
        and baseline written before it existed stays byte-identical."""
        row = asdict(self)
        if row["bias_var"] == 0:
            del row["bias_var"]
        return row


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StabilityError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise StabilityError(f"{name} must be >= {minimum}, got {value}")


def _check_bias_var(value: object, bias: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StabilityError(f"bias_var must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise StabilityError(f"bias_var must be finite and >= 0, got {value!r}")
    if value > 0 and not bias:
        raise StabilityError(f"bias_var {value!r} needs bias=True (a network without biases)")


def check_batch(batch: object) -> int:
    """A probe batch needs at least 2 samples to have a variance."""
    _check_int("batch", batch, minimum=2)
    assert isinstance(batch, int)
    return batch
