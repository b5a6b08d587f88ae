"""A sweep's stacked probe imports nothing heavy on its first call.

``torch.autograd.grad`` given output gradients checks their shapes through torch.fx's
symbolic shapes, whose first import pulls in sympy: 0.6-0.9 s of every sweep process and
of every fresh pool worker (issue 27). The stacked probe backpropagates from its scalar
projection loss instead. Each check runs in a fresh interpreter (imports are per process);
the witness shows the check sees the import when it happens.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRELUDE = """
import sys
import torch
from stability.core.config import MLPConfig
from stability.core.stacked import probe_stack
before = "sympy" in sys.modules
"""
PROBE = """
configs = [MLPConfig(depth=3, width=8, activation="tanh", init="xavier_normal", seed=s)
           for s in (0, 1)]
probe_stack(configs, 4)
"""
GIVEN_GRADIENT = """
x = torch.ones(3, requires_grad=True)
torch.autograd.grad(x * 2, x, torch.ones(3))
"""
REPORT = """
print("already" if before else ("imported" if "sympy" in sys.modules else "not imported"))
"""


def _sympy_after(code: str) -> bool:
    """Whether ``code`` imported sympy; skipped where ``import torch`` already does."""
    result = subprocess.run(
        [sys.executable, "-c", PRELUDE + code + REPORT],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    said = result.stdout.strip()
    if said == "already":
        pytest.skip("this torch imports sympy with itself: the probe has nothing to avoid")
    return said == "imported"


def test_the_stacked_probe_does_not_import_sympy() -> None:
    assert not _sympy_after(PROBE)


def test_witness_a_given_output_gradient_does() -> None:
    assert _sympy_after(GIVEN_GRADIENT)
