"""Free probability's moments at the edges, and the finite-width band of the mean."""

import math

import pytest

from stability.core.config import MLPConfig
from stability.core.finite_width import predict_band
from stability.core.jacobian_theory import predicted_moments
from stability.core.jacobian_width import layer_variance, mean_band


@pytest.mark.parametrize("sb2", [0.0, 0.3])
def test_linear_orthogonal_variance_is_exactly_zero(sb2: float) -> None:
    """J J^T = sigma_w^{2L} I: the quadrature's rounding (-2e-14) no longer shows."""
    for p in predicted_moments("identity", 1.0, sb2, 12, "orthogonal"):
        assert p.jj_var == 0.0 and p.normalised_var == 0.0


@pytest.mark.parametrize("act", ["identity", "relu", "tanh", "gelu"])
@pytest.mark.parametrize("law", ["gaussian", "orthogonal"])
def test_predicted_variance_is_never_negative(act: str, law: str) -> None:
    assert all(p.jj_var >= 0.0 for p in predicted_moments(act, 1.3, 0.05, 10, law))


def test_linear_gaussian_band_is_the_trace_of_a_wishart_product() -> None:
    """Linear layers: kappa = 1, s_{l-1} = l - 1, so Var ln T_L = sum_l 2 l / n^2 (no cap
    while L < n) and the log10 mean sits -Var / (2 ln 10) below free probability's."""
    n, depth = 64, 12
    band = mean_band("identity", 1.0, 0.0, depth, n, 4, "gaussian")
    for b in band:
        want = sum(2.0 * layer / n**2 for layer in range(1, b.depth + 1))
        assert b.var_ln == pytest.approx(want, rel=1e-9)
        assert b.log10_offset == pytest.approx(-want / (2 * math.log(10.0)), rel=1e-9)
    assert all(b.var_ln == 0.0 for b in mean_band("identity", 1.0, 0.0, depth, n, 4, "orthogonal"))


def test_trace_spread_caps_where_a_few_directions_carry_it() -> None:
    """(1 + s) / n <= 1: tr(A^2) <= tr(A)^2, whatever free probability's s says."""
    assert layer_variance(1.0, 0.0, 1e6, 64, 8, "gaussian") == pytest.approx(2.0 / 64)
    assert layer_variance(1.0, 0.0, 1e6, 64, 8, "orthogonal") == 0.0


def test_linear_trace_spread_is_the_projected_gradients_band_less_the_projection() -> None:
    """Against core/finite_width: the layer-1 gradient band of a depth L + 1 network is the
    trace's log times a random projection's; by the law of total variance the band's
    variance is the trace's plus the projection's given the network, 2 (1 + s_L) / (n B).
    For linear layers both are exact to first order: they must agree. The bounds are
    one-sided in A's band (it may widen, never narrow below the trace's own spread): the
    trace's variance stays below the band's, and above half of the band less projection."""
    n, batch = 64, 8
    ours = mean_band("identity", 1.0, 0.0, 16, n, batch, "gaussian")
    s = predicted_moments("identity", 1.0, 0.0, 16, "gaussian")
    for depth in (4, 8, 16):
        config = MLPConfig(depth=depth + 1, width=n, activation="identity", init="lecun_normal")
        band_var = (predict_band(config, batch)[0].grad_sd * math.log(10.0)) ** 2
        projection = 2.0 * (1.0 + s[depth - 1].normalised_var) / (n * batch)
        assert ours[depth - 1].var_ln <= band_var, (depth, ours[depth - 1], band_var)
        assert ours[depth - 1].var_ln >= 0.5 * (band_var - projection), (depth, band_var)


def test_tanh_mean_sits_above_free_probability_by_the_inputs_norm() -> None:
    """tanh near its isometric point, orthogonal weights: mu_1(q) falls with q and a random
    input's ln(|x|^2 / n) averages -1/n, so one network's mean eigenvalue sits above free
    probability (exp((R^2 - R) / n)), which the band's offset carries. 96 networks (fixed
    seeds): the measured log10 offset agrees with the band's within 4 standard errors
    (the spread over networks / sqrt(96)) and is 2 of them away from 0."""
    import torch

    from stability.core.jacobian import spectrum
    from stability.core.model import input_batch
    from stability.core.scaled import scaled_mlp

    width, batch, depth, nets = 32, 4, 12, 96
    sw2, sb2, second = 1.1, 0.0, 0.05  # near tanh's critical point, q_1 = 0.055 ~ q*
    want = predicted_moments("tanh", sw2, sb2, depth, "orthogonal", second)[-1].jj_mean
    band = mean_band("tanh", sw2, sb2, depth, width, batch, "orthogonal", second)[-1]
    logs = []
    for seed in range(nets):
        model = scaled_mlp("tanh", depth, width, sw2, sb2, "orthogonal", seed=seed)
        x = input_batch(model.config, batch) * math.sqrt(second)
        logs.append(math.log10(spectrum(model, x, [depth], "exact")[0].jj_mean / want))
    got = torch.tensor(logs)
    se = float(got.std()) / math.sqrt(nets)
    assert abs(float(got.mean()) - band.log10_offset) < 4 * se, (float(got.mean()), band, se)
    assert float(got.mean()) > 2 * se and band.shift > 0
