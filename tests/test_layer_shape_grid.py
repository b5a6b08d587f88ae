"""The layer shape's separable quadrature equals the plain two-dimensional one.

``core/layer_shape.py`` evaluates the activation at the first input's n nodes, not at n^2
grid points, and integrates the second input row by row (issue 27: the band walk was a
tenth of the sweep command). Here every statistic is recomputed the plain way, on the full
grid with the product weights, from its definition; the two must agree to float rounding.
The witness pairs the first input with the wrong grid axis and is caught.
"""

import math

import numpy as np
import pytest
import torch

from stability.core.activations import get_activation
from stability.core.layer_shape import NODES, WEIGHTS, band_steps, layer_shape, log_slopes

ACTIVATIONS = ("tanh", "relu", "gelu", "selu", "scaled_logistic", "identity")
POINTS = ((1.0, 0.0), (0.3, 0.5), (7.0, -0.4), (1e-3, 0.97), (2.5, 1.0))
FIELDS = ("kappa", "kappa_slope", "rho", "rho_slope", "c_next", "slope_corr", "cross",
          "cross_rho")  # fmt: skip
# Terms of size 1 summed in a different order: a few ulps each, far below any band width.
TOLERANCE = 1e-12


def plain(activation: str, q: float, c: float, transposed: bool = False) -> dict[str, float]:
    """Every statistic from its definition on the full grid (``transposed``: the witness's
    bug, the shared component taken along the wrong axis)."""
    z1, z2 = np.meshgrid(NODES, NODES, indexing="xy" if transposed else "ij")
    w2 = np.outer(WEIGHTS, WEIGHTS)
    s = math.sqrt(q)
    u = s * np.meshgrid(NODES, NODES, indexing="ij")[0]
    v = s * (c * z1 + math.sqrt(max(1.0 - c * c, 0.0)) * z2)
    t = torch.from_numpy(np.stack([u, v])).requires_grad_()
    out = get_activation(activation).factory()(t)
    (grad,) = torch.autograd.grad(out.sum(), t)
    (pu, pv), (du, dv) = out.detach().numpy(), grad.numpy()

    def e(a: np.ndarray) -> float:
        return float((a * w2).sum())

    f, fs = e(pu**2), e(du**2)
    return {
        "kappa": e(pu**4) / f**2,
        "kappa_slope": e(du**4) / fs**2,
        "rho": e(pu**2 * pv**2) / f**2 - 1.0,
        "rho_slope": e(du**2 * dv**2) / fs**2 - 1.0,
        "c_next": e(pu * pv) / f,
        "slope_corr": e(du * dv) / fs,
        "cross": e(pu**2 * du**2) / (f * fs) - 1.0,
        "cross_rho": e(pu**2 * dv**2) / (f * fs) - 1.0,
    }


def agree(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * max(1.0, abs(a), abs(b))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_layer_shape_equals_the_plain_grid(activation: str) -> None:
    for q, c in POINTS:
        shape, ref = layer_shape(activation, q, c), plain(activation, q, c)
        for name in FIELDS:
            assert agree(getattr(shape, name), ref[name]), (activation, q, c, name)


@pytest.mark.parametrize("activation", ["tanh", "relu", "selu"])
def test_band_steps_equal_layer_shape_and_the_plain_slope(activation: str) -> None:
    """Several points at once, each at its (c, c_eff); the correlation map's slope is the
    plain grid's central difference of c_next."""
    points = [(1.0, 0.2, 0.25), (0.4, 0.0, 0.06), (3.0, 0.9, 0.91)]
    qs = np.array([p[0] for p in points])
    steps = band_steps(activation, points, log_slopes(activation, qs))
    for (q, c, c_eff), (shape, noisy, slope) in zip(points, steps, strict=True):
        for got, at in ((shape, c), (noisy, c_eff)):
            ref = plain(activation, q, round(at, 6))
            assert all(agree(getattr(got, n), ref[n]) for n in FIELDS), (q, at)
        up, down = (plain(activation, q, round(x, 6))["c_next"] for x in (c + 1e-3, c - 1e-3))
        assert abs(slope - (up - down) / 2e-3) <= 1e-9 * max(1.0, abs(slope))


def test_the_wrong_axis_is_caught() -> None:
    """Witness: with the shared component on the other axis, the inputs no longer correlate
    by c, and the comparison above fails."""
    shape, bad = layer_shape("tanh", 1.0, 0.5), plain("tanh", 1.0, 0.5, transposed=True)
    assert not agree(shape.c_next, bad["c_next"])
    assert not agree(shape.rho, bad["rho"])
