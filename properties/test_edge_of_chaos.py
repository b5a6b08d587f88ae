"""The edge of chaos and the Jacobian's spectrum: mean field against simulated networks.

- The critical line: for a random sigma_b^2, the sigma_w^2 where mean field puts chi_1 = 1
  is where simulated networks sit between order and chaos: the measured chi_1 (a tangent's
  per-layer growth, ``core.depth_scales``) is 1 there within 5 standard errors; at 40 %
  less sigma_w^2 it is below 1, at 60 % more above, each matching mean field's chi_1.
- The correlation depth scale: in the ordered phase ``1 - c_l`` decays as
  ``exp(-l / xi_c)``; the measured per-layer decay rate matches ``exp(-1 / xi_c)``.
- The length depth scale: ``q_l - q*`` decays as ``exp(-l / xi_q)``, measured as the
  distance between two trajectories through the same networks (``check_xi_q``).
- The Jacobian's moments: mean and variance of the eigenvalues of J J^T (exact product)
  against the free-probability prediction (``core.jacobian_theory``), for linear, relu and
  tanh, Gaussian and orthogonal weights; and the finite-width band of one network's log10
  mean (``core.jacobian_width``): its average and its spread over networks.

Standard errors come from the spread over independent seeds (networks), each seed's value
being an average over layers or inputs. They are estimated from few networks, so a
5-sigma bound is ``t_sigmas(networks - 1)`` of them (Student's t: 8.3 for 16 networks, 17.1
for 8), not 5: with 8 networks and 5 of them, one check in ~600 failed by chance (measured:
chi_1 4.9 standard errors off at (3.0, 0.5) in the report, 4.6 and 4.1 in 450 draws of
the critical-line check), while the finite-width bias of the measured chi_1 is below
0.5 / width (docs/theory.md); ``1 / width`` bounds it.
"""

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2
from strategies import seeds
from witness import assert_fails_on

from stability.core.criticality import critical_sigma_w2, mean_field
from stability.core.depth_scales import length_map_decay, measured_chi_1, simulate, t_sigmas
from stability.core.jacobian import spectrum
from stability.core.jacobian_theory import MomentPrediction, predicted_moments
from stability.core.jacobian_width import MeanBand, mean_band
from stability.core.model import input_batch
from stability.core.scaled import scaled_mlp

pytestmark = pytest.mark.usefixtures("one_thread")

CHAPTER = "Numerical stability: initialisation and the edge of chaos"
WIDTH, NETS, LAYERS, SKIP = 128, 16, 10, 2  # simulated networks for chi_1 and xi_c
T_NETS = t_sigmas(NETS - 1)  # 5 sigma for an error estimated from NETS networks
CHI_1_BIAS = 1.0 / WIDTH  # bound on the measured chi_1's finite-width bias (module doc)
SPEC_DEPTH, SPEC_WIDTH, SPEC_BATCH, SPEC_NETS = 8, 64, 4, 16  # Jacobian moments
SLOW = settings(max_examples=4, deadline=None)  # ~1 s an example on a quiet core

CriticalLine = Callable[[float], float]


def mean_field_line(sb2: float) -> float:
    return float(critical_sigma_w2("tanh", [sb2])[0])


def bias_blind_line(sb2: float) -> float:
    """Known-bad: the critical point without bias (sigma_w^2 = 1 for tanh) for every sb2."""
    return float(critical_sigma_w2("tanh", [0.0])[0])


def chi_1_measured(sw2: float, sb2: float, seed: int) -> tuple[float, float]:
    q = mean_field("tanh", [sw2], [sb2])[0].q_star
    trace = simulate("tanh", sw2, sb2, LAYERS, WIDTH, NETS, max(q, 1e-3), 0.5, 1, seed)
    return measured_chi_1(trace, SKIP)


def check_critical_line(line: CriticalLine, sb2: float, seed: int) -> None:
    """Measured chi_1 = 1 on the line; below it < 1, above it > 1, as predicted: each within
    ``T_NETS`` standard errors plus the finite-width bias bound."""
    sw2 = line(sb2)
    chi, se = chi_1_measured(sw2, sb2, seed)
    assert abs(chi - 1.0) < T_NETS * se + CHI_1_BIAS, f"on the line: chi_1 {chi:.4f} +- {se:.4f}"
    for factor, side in ((0.6, "below"), (1.6, "above")):
        got, se_side = chi_1_measured(factor * sw2, sb2, seed)
        want = mean_field("tanh", [factor * sw2], [sb2])[0].chi_1
        assert (want < 1.0) == (side == "below"), f"{side} the line, mean field says {want:.4f}"
        bound = T_NETS * se_side + CHI_1_BIAS
        assert abs(got - want) < bound, f"{side}: chi_1 {got:.4f} +- {se_side:.4f}"
        assert (got < 1.0) == (side == "below"), f"{side} the line, measured {got:.4f}"


@SLOW
@given(sb2=st.floats(0.02, 0.5), seed=seeds())
def test_critical_line_separates_order_from_chaos(sb2: float, seed: int) -> None:
    check_critical_line(mean_field_line, sb2, seed)


def test_witness_critical_line_separates_order_from_chaos() -> None:
    """The line that forgets the bias (sigma_w^2 = 1) is in the ordered phase at sb2 = 0.1."""
    assert_fails_on(bias_blind_line, check_critical_line, 0.1, 3)


def xi_c_mean_field(sw2: float, sb2: float) -> float:
    return mean_field("tanh", [sw2], [sb2])[0].xi_c


def xi_c_amplitude(sw2: float, sb2: float) -> float:
    """Known-bad: xi from the amplitude (sqrt chi_1) instead of the variance: twice as long."""
    return 2.0 * xi_c_mean_field(sw2, sb2)


def check_xi_c(xi: Callable[[float, float], float], sw2: float, sb2: float, seed: int) -> None:
    """Per network, the least-squares slope of log(1 - c_l) over layers; their mean against
    -1/xi within ``T_NETS`` standard errors of the mean over networks."""
    point = mean_field("tanh", [sw2], [sb2])[0]
    trace = simulate("tanh", sw2, sb2, LAYERS, WIDTH, NETS, point.q_star, 0.99, 2, seed)
    logs = (1.0 - trace.c).clamp(min=1e-300).log()  # (layers, nets)
    layers = torch.arange(1, LAYERS + 1, dtype=torch.float64)[:, None]
    centred = layers - layers.mean()
    slopes = (centred * (logs - logs.mean(dim=0))).sum(dim=0) / (centred**2).sum()
    se = float(slopes.std()) / math.sqrt(NETS)
    want = -1.0 / xi(sw2, sb2)
    got = float(slopes.mean())
    assert abs(got - want) < T_NETS * se, f"slope {got:.4f} +- {se:.4f}, xi says {want:.4f}"


@SLOW
@given(sw2=st.floats(0.8, 1.5), sb2=st.floats(0.05, 0.5), seed=seeds())
def test_xi_c_matches_measured_decay(sw2: float, sb2: float, seed: int) -> None:
    """Ordered phase only (chi_1 <= 0.9, so 1 - c_l stays far above rounding for 10 layers)."""
    point = mean_field("tanh", [sw2], [sb2])[0]
    if point.chi_1 > 0.9:
        sw2 = sw2 * 0.9 / point.chi_1  # chi_1 is about proportional to sigma_w^2
    check_xi_c(xi_c_mean_field, sw2, sb2, seed)


def test_witness_xi_c_matches_measured_decay() -> None:
    assert_fails_on(xi_c_amplitude, check_xi_c, 1.2, 0.3, 5)


XI_Q_LAYERS, XI_Q_WIDTH, XI_Q_NETS = 3, 256, 16


def xi_q_mean_field(sw2: float, sb2: float) -> float:
    return mean_field("tanh", [sw2], [sb2])[0].xi_q


def xi_q_from_chi_1(sw2: float, sb2: float) -> float:
    """Known-bad: the length scale taken from chi_1 (xi_c's ordered-phase rate), forgetting
    the ``sigma_w^2 E[phi'' phi]`` term of the length map's slope (Schoenholz eq. 5)."""
    return -1.0 / math.log(mean_field("tanh", [sw2], [sb2])[0].chi_1)


def check_xi_q(xi: Callable[[float, float], float], sw2: float, sb2: float, seed: int) -> None:
    """The measured decay of ``q_l - q*`` (``depth_scales.length_map_decay``: common random
    numbers, first ``XI_Q_LAYERS`` layers) against ``-1/xi`` within ``t_sigmas(15)``
    jackknife standard errors (16 networks) plus a bound on its finite-width bias.

    That bias: the perturbation's transverse part grows as chi_1^l against the radial
    part's exp(-l / xi_q) and feeds back into q with weight 1/width, so the mean distance at
    layer l is off by a relative ``(chi_1 exp(1/xi_q))^l / width`` to leading order (unit
    coefficient: over 40 random points the slope sat within 4.0 errors without it); a
    least-squares slope over layers 1..K moves by at most the value at K (the centred
    weights are -1, 0, 1 over 2 for K = 3)."""
    point = mean_field("tanh", [sw2], [sb2])[0]
    got, se = length_map_decay(
        "tanh", sw2, sb2, point.q_star, XI_Q_LAYERS, XI_Q_WIDTH, XI_Q_NETS, seed=seed
    )
    rate = math.exp(-1.0 / point.xi_q)
    bias = (point.chi_1 / rate) ** XI_Q_LAYERS / XI_Q_WIDTH
    want = -1.0 / xi(sw2, sb2)
    assert abs(got - want) < t_sigmas(XI_Q_NETS - 1) * se + bias, (
        f"ln decay per layer {got:.4f} +- {se:.4f} (bias bound {bias:.3f}), xi_q says {want:.4f}"
    )


@settings(max_examples=3, deadline=None)
@given(sw2=st.floats(0.8, 2.5), sb2=st.floats(0.02, 0.5), seed=seeds())
def test_xi_q_matches_measured_decay(sw2: float, sb2: float, seed: int) -> None:
    """tanh on both sides of the critical line: q_l approaches q* as exp(-l / xi_q)."""
    check_xi_q(xi_q_mean_field, sw2, sb2, seed)


def test_witness_xi_q_matches_measured_decay() -> None:
    """At sigma_w^2 = 1.5, sigma_b^2 = 0.1, chi_1's rate (0.88) is far slower than the length
    map's (0.47): the measured decay tells them apart."""
    assert_fails_on(xi_q_from_chi_1, check_xi_q, 1.5, 0.1, 11)


Predict = Callable[[str, float, float, int, str], list[MomentPrediction]]
POINTS = {"identity": 1.0, "relu": 2.0, "tanh": 1.5}  # sigma_w^2 where chi_1 is about 1


def ignoring_weight_spread(
    act: str, sw2: float, sb2: float, depth: int, law: str
) -> list[MomentPrediction]:
    """Known-bad: every weight law treated as orthogonal (W W^T's own spread forgotten)."""
    return predicted_moments(act, sw2, sb2, depth, "orthogonal")


Band = Callable[[str, float, float, int, int, int, str], list[MeanBand]]
# The spread check: (K - 1) s^2 / sd^2 ~ chi-square(K - 1) for K networks, two-sided at
# 99.9 %; the band's own model error (the measured sd is 0.87-1.24x its sd over 48 networks at
# these points, docs/spectrum.md) widens each side by BAND_MODEL = 1.5 in sd.
SPREAD_LO = float(chi2.ppf(0.0005, SPEC_NETS - 1)) / (SPEC_NETS - 1)
SPREAD_HI = float(chi2.ppf(0.9995, SPEC_NETS - 1)) / (SPEC_NETS - 1)
BAND_MODEL = 1.5
ROUNDING = 1e-6  # decades: float32 weights' spread where the band says exactly 0


def width_infinite(
    act: str, sw2: float, sb2: float, depth: int, width: int, batch: int, law: str
) -> list[MeanBand]:
    """Known-bad: free probability taken as it is at any width (no offset, no spread)."""
    return [
        MeanBand(b.depth, 0.0, 0.0, 0.0) for b in mean_band(act, sw2, sb2, depth, width, batch, law)
    ]


def check_moments(
    predict: Predict, act: str, law: str, sb2: float, seed: int, band: Band = mean_band
) -> None:
    """Mean and variance of J J^T's eigenvalues, pooled over a batch, per network; their
    means over networks against the prediction within ``t_sigmas(SPEC_NETS - 1)`` standard
    errors (5 sigma for an error estimated from SPEC_NETS networks), plus a floor of 1e-9
    relative for the exactly degenerate orthogonal-linear case (variance 0). Then the
    finite-width band: the networks' log10 mean averages to the band's offset within the
    same bound, and spreads by its sd (chi-square bounds, see SPREAD_LO/HI)."""
    sw2 = POINTS[act]
    means, variances = [], []
    for net in range(SPEC_NETS):
        model = scaled_mlp(act, SPEC_DEPTH, SPEC_WIDTH, sw2, sb2, law, seed=seed + net)  # type: ignore[arg-type]
        row = spectrum(model, input_batch(model.config, SPEC_BATCH), [SPEC_DEPTH], "exact")[0]
        means.append(row.jj_mean)
        variances.append(row.jj_var)
    want = predict(act, sw2, sb2, SPEC_DEPTH, law)[-1]
    b = band(act, sw2, sb2, SPEC_DEPTH, SPEC_WIDTH, SPEC_BATCH, law)[-1]
    # One network's mean is log-normal-like (relative sd sqrt(exp(var_ln) - 1)), its
    # variance ~ s mean^2 twice as wide in log: 8 skewed draws understate their sd now and
    # then (1 in 168 trials at 5 sample SE), so each SE is the larger of the sample's and
    # the band's.
    mean_sd = want.jj_mean * math.sqrt(math.expm1(b.var_ln))
    var_sd = want.jj_var * math.sqrt(math.expm1(4.0 * b.var_ln))
    for name, got, expected, floor in (
        ("mean", torch.tensor(means), want.jj_mean, mean_sd),
        ("variance", torch.tensor(variances), want.jj_var, var_sd),
    ):
        se = max(float(got.std()), floor) / math.sqrt(SPEC_NETS)
        bound = t_sigmas(SPEC_NETS - 1) * se + 1e-9 * want.jj_mean**2
        assert abs(float(got.mean()) - expected) < bound, (
            f"{act}/{law}: {name} {float(got.mean()):.4g} +- {se:.3g}, predicted {expected:.4g}"
        )
    logs = torch.tensor(means, dtype=torch.float64).log10() - math.log10(want.jj_mean)
    sd = float(logs.std())
    where = f"{act}/{law}: log10 mean {float(logs.mean()):+.4f} sd {sd:.4f}"
    assert abs(float(logs.mean()) - b.log10_offset) <= t_sigmas(SPEC_NETS - 1) * sd / math.sqrt(
        SPEC_NETS
    ) + (ROUNDING), f"{where}, band offset {b.log10_offset:+.4f}"
    if b.log10_sd == 0.0:
        assert sd < ROUNDING, f"{where}, band says no spread"
        return
    ratio = (sd / b.log10_sd) ** 2
    assert SPREAD_LO / BAND_MODEL**2 <= ratio <= SPREAD_HI * BAND_MODEL**2, (
        f"{where}, band sd {b.log10_sd:.4f}"
    )


@settings(max_examples=8, deadline=None)
@given(
    act=st.sampled_from(sorted(POINTS)),
    law=st.sampled_from(["gaussian", "orthogonal"]),
    sb2=st.sampled_from([0.0, 0.1]),
    seed=st.integers(0, 10_000),
)
def test_jacobian_moments_match_free_probability(act: str, law: str, sb2: float, seed: int) -> None:
    check_moments(predicted_moments, act, law, sb2, seed)


def test_witness_jacobian_moments_match_free_probability() -> None:
    """Gaussian linear layers: the orthogonal prediction says variance 0, they spread ~L;
    and free probability read as one network's value (no finite-width spread) fails too."""
    assert_fails_on(ignoring_weight_spread, check_moments, "identity", "gaussian", 0.0, 7)
    failure = assert_fails_on(
        width_infinite, lambda band, *a: check_moments(predicted_moments, *a, band=band),
        "relu", "gaussian", 0.0, 7,
    )  # fmt: skip
    assert "band says no spread" in str(failure)
