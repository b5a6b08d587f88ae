"""Numerical stability of deep networks: build, probe, predict, sweep, store.

The public API is re-exported here; submodules hold one concept each.
"""

from stability.config import MLPConfig
from stability.errors import StabilityError
from stability.model import build_mlp, input_batch
from stability.probe import LayerStats, Probe, probe
from stability.theory import predict

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
