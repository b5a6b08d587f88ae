"""One length map: the probe's theory (``theory.predict``) and the edge of chaos
(``criticality``) iterate the same ``q -> sigma_w^2 E[phi^2](q) + sigma_b^2``.

``predict`` starts it from the input (``q_1 = sigma_w^2 E[x^2] + sigma_b^2``) on closed forms
where they exist; ``criticality`` runs it batched over many (sigma_w^2, sigma_b^2) points
for the phase diagram. If either drifted (a bias term dropped, a different convention for
layer 1), the deep layers of a probe network would stop sitting at the q* the phase
diagram and ``stability criticality`` report.
"""

import math

import pytest
import torch

from stability.core.config import MLPConfig
from stability.core.criticality import q_map, q_star
from stability.core.inits import sigma_w2
from stability.core.theory import predict

CASES = [
    ("tanh", "xavier_normal", 0.3),
    ("tanh", "kaiming_normal", 0.05),
    ("relu", "xavier_normal", 0.2),
    ("leaky_relu", "xavier_normal", 0.1),
    ("selu", "lecun_normal", 0.1),
    ("sigmoid", "xavier_normal", 0.5),
    ("gelu", "xavier_normal", 0.0),
]


@pytest.mark.parametrize(("activation", "init", "sb2"), CASES)
def test_predict_iterates_the_criticality_length_map(
    activation: str, init: str, sb2: float
) -> None:
    """Layer by layer q_{l+1} = q_map(q_l) to quadrature accuracy, q_1 = sigma_w^2 + sigma_b^2,
    and a deep net ends at the fixed point q* of the same map."""
    config = MLPConfig(40, 64, activation, init, bias_var=sb2)
    s2 = sigma_w2(init, 64, 64)
    assert s2 is not None
    qs = [p.preact_var for p in predict(config)]
    assert qs[0] == pytest.approx(s2 + sb2, rel=1e-15)
    f64 = torch.float64
    mapped = q_map(
        activation,
        torch.tensor([s2], dtype=f64),
        torch.tensor([sb2], dtype=f64),
        torch.tensor(qs[:-1], dtype=f64),
    )
    assert mapped.tolist() == pytest.approx(qs[1:], rel=1e-10)
    fixed = float(q_star(activation, [s2], [sb2])[0])
    if math.isfinite(fixed) and fixed > 1e-6:  # relu+xavier and gelu decay to q* = 0 slowly
        assert qs[-1] == pytest.approx(fixed, rel=1e-6)


def test_bias_free_theory_is_unchanged_by_biases_at_zero_variance() -> None:
    """bias_var = 0 (biases present, all zero) predicts what bias=False does, bit for bit."""
    with_bias = predict(MLPConfig(20, 32, "tanh", "xavier_normal", bias=True), 8)
    without = predict(MLPConfig(20, 32, "tanh", "xavier_normal", bias=False), 8)
    assert with_bias == without
