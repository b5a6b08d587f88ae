"""Numerical stability of deep networks: build, probe, predict, sweep, store.

The public API is re-exported here; submodules hold one concept each. The re-exports load
on first use (PEP 562), so importing a submodule, the CLI above all, does not pay for torch
before it needs it: the CLI's imports run where a Ctrl-C is one line, not a traceback.
"""

import importlib
from typing import TYPE_CHECKING, Any

from stability.errors import StabilityError

if TYPE_CHECKING:
    from stability.core.config import MLPConfig
    from stability.core.model import build_mlp, input_batch
    from stability.core.probe import LayerStats, Probe, probe
    from stability.core.theory import predict
    from stability.integrations.watch import NonFiniteError, watch

_LAZY = {
    "MLPConfig": "stability.core.config",
    "build_mlp": "stability.core.model",
    "input_batch": "stability.core.model",
    "LayerStats": "stability.core.probe",
    "Probe": "stability.core.probe",
    "probe": "stability.core.probe",
    "predict": "stability.core.theory",
    "watch": "stability.integrations.watch",
    "NonFiniteError": "stability.integrations.watch",
}

__all__ = [
    "LayerStats",
    "MLPConfig",
    "NonFiniteError",
    "Probe",
    "StabilityError",
    "build_mlp",
    "input_batch",
    "predict",
    "probe",
    "watch",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """A public name on first use: import its module, then keep it here."""
    if name not in _LAZY:
        raise AttributeError(f"module 'stability' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
