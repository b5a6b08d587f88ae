"""Numerical stability of deep networks: build, probe, predict, sweep, store.

The public API is re-exported here; submodules hold one concept each.
"""

from stability.core.config import MLPConfig
from stability.core.model import build_mlp, input_batch
from stability.core.probe import LayerStats, Probe, probe
from stability.core.theory import predict
from stability.errors import StabilityError

__all__ = [
    "LayerStats",
    "MLPConfig",
    "Probe",
    "StabilityError",
    "build_mlp",
    "input_batch",
    "predict",
    "probe",
]
__version__ = "0.1.0"
