"""A user's pytest file using the stability plugin (installed with ``pip install stability``).

    pytest examples/test_with_plugin.py --stability-report reports/

The fixtures wrap ``stability.testing``; what they probe goes to ``reports/`` as CSV, JSON and
an HTML page. ``@pytest.mark.stability_float16`` runs a test's checks with the model under
float16 emulation (weights, inputs, every module's output and gradient rounded), so an
overflow a float16 run would hit fails the test on a CPU.
"""

import pytest
import torch
from torch import nn


def small_resnet_mlp(width: int = 32) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(4):
        fc = nn.Linear(width, width)
        nn.init.kaiming_normal_(fc.weight, nonlinearity="relu")
        layers += [fc, nn.ReLU()]
    return nn.Sequential(*layers)


def test_variance_is_preserved(stability_check) -> None:  # type: ignore[no-untyped-def]
    model = small_resnet_mlp()
    stability_check.variance_preserved(model, torch.randn(256, 32), band=(-1, 1))
    stability_check.gradients_finite(model, torch.randn(256, 32))


@pytest.mark.stability_float16
def test_survives_float16(stability_check) -> None:  # type: ignore[no-untyped-def]
    model = small_resnet_mlp()
    stability_check.no_overflow(model, torch.randn(256, 32))  # in float16: the marker's dtype


@pytest.mark.stability_float16
def test_my_own_float16_step(stability_emulate) -> None:  # type: ignore[no-untyped-def]
    model = small_resnet_mlp()
    with stability_emulate(model):
        out = model(torch.randn(8, 32) * 1e3)  # 1e3-sized inputs: about 1e4 out, under 65504
    assert torch.isfinite(out).all()
