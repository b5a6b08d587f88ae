"""What the spectrum and phase-diagram sections show, computed once per code version.

- ``spectrum_depth``: the input-output Jacobian's spectrum per depth (exact product) for
  linear, relu and tanh with Gaussian and orthogonal weights, each at its critical point
  (tanh at ``best_init``'s point for the deepest depth, inputs at its q*), beside the
  free-probability mean and variance of J J^T, and the finite-width band of one network's
  log10 mean (``core/jacobian_width.py``) that the section judges the measured mean by.
- ``spectrum_d2l``: the notes' product of 100 random 4x4 N(0, 1) matrices, as a spectrum.
- ``phase_diagram``: mean field over a (sigma_w^2, sigma_b^2) grid for tanh, and on a few
  points the measured chi_1 and depth scales of simulated networks.
- ``critical_line``: sigma_w^2 where chi_1 = 1, per sigma_b^2.

Quick mode keeps the networks small (a few seconds); the full report uses wider ones.
"""

import math
from collections.abc import Sequence
from typing import Any

import torch

from stability.core import criticality as cr
from stability.core.best_init import best_init
from stability.core.depth_scales import (
    fitted_depth_scale,
    length_map_decay,
    measured_chi_1,
    simulate,
)
from stability.core.jacobian import spectrum
from stability.core.jacobian_theory import predicted_moments
from stability.core.jacobian_width import mean_band
from stability.core.model import input_batch
from stability.core.scaled import scaled_mlp
from stability.measure.threads import threads
from stability.results.store import Store

VERSION = 1  # bump when what is computed changes without a code change (it cannot, today)
NAMES = ("spectrum_depth", "spectrum_d2l", "phase_diagram", "critical_line")
ACTIVATION = "tanh"
SW2_GRID = tuple(round(0.25 * k, 2) for k in range(2, 17))  # 0.5 .. 4
SB2_GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5)
MEASURED = ((0.8, 0.1), (1.2, 0.3), (1.5, 0.05), (2.5, 0.1), (3.0, 0.5), (1.76, 0.05))
Rows = list[dict[str, Any]]


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """JSON has no inf or NaN: store them as strings the frame reader turns back."""
    return {
        k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()
    }


QUICK_SPECTRUM = (64, 4, (1, 2, 4, 8, 16, 32))  # width, batch, depths
FULL_SPECTRUM = (128, 8, (1, 2, 4, 8, 16, 32, 64))


def spectrum_rows(width: int, batch: int, depth_list: Sequence[int]) -> Rows:
    depths = list(depth_list)
    tanh = best_init("tanh", depths[-1], "orthogonal")
    points = [("identity", 1.0, 0.0), ("relu", 2.0, 0.0), ("tanh", tanh.sigma_w2, tanh.sigma_b2)]
    rows: Rows = []
    for act, sw2, sb2 in points:
        q = cr.q_star(act, [sw2], [sb2])
        q0 = float(q[0]) if act == "tanh" and math.isfinite(float(q[0])) else sw2 + sb2
        input_second = (q0 - sb2) / sw2  # inputs whose first pre-activation sits at q*
        for law in ("gaussian", "orthogonal"):
            model = scaled_mlp(act, depths[-1], width, sw2, sb2, law, seed=0)
            x = input_batch(model.config, batch) * math.sqrt(input_second)
            measured = spectrum(model, x, depths, "exact")
            predicted = predicted_moments(act, sw2, sb2, depths[-1], law, input_second)
            band = mean_band(act, sw2, sb2, depths[-1], width, batch, law, input_second)
            for m in measured:
                p, b = predicted[m.depth - 1], band[m.depth - 1]
                rows.append(_finite({
                    "activation": act, "weights": law, "sigma_w2": sw2, "sigma_b2": sb2,
                    **m.as_dict(),
                    "predicted_jj_mean": p.jj_mean, "predicted_jj_var": p.jj_var,
                    "predicted_normalised_var": p.normalised_var,
                    "band_log10_offset": b.log10_offset, "band_log10_sd": b.log10_sd,
                }))  # fmt: skip
    return rows


def d2l_rows(count: int = 100, seeds: int = 8) -> Rows:
    """log10 singular values of M_1 ... M_k, 4x4 N(0, 1), after k factors (float64): the
    top one grows at the Lyapunov rate, the condition number explodes and saturates at
    float64's 1e16 (the smallest singular value is lost to rounding)."""
    gen = torch.Generator().manual_seed(0)
    mats = torch.randn(seeds, count, 4, 4, generator=gen, dtype=torch.float64)
    top = 0.5 * (math.log(2.0) + float(torch.special.digamma(torch.tensor(2.0))))
    product = torch.eye(4, dtype=torch.float64).expand(seeds, 4, 4)
    rows: Rows = []
    for k in range(count):
        product = product @ mats[:, k]
        if k + 1 in (1, 2, 5, 10, 20, 50, 100):
            s = torch.linalg.svdvals(product).log10()
            rows.append({
                "factors": k + 1, "log10_s_max": float(s[:, 0].mean()),
                "log10_s_min": float(s[:, -1].mean()),
                "log10_condition": float((s[:, 0] - s[:, -1]).mean()),
                "predicted_log10_s_max": (k + 1) * top / math.log(10.0),
            })  # fmt: skip
    return rows


XI_Q_LAYERS = 3  # xi_q ~ 1: beyond a few layers q - q* is below the networks' wander


def phase_rows(
    points: Sequence[tuple[float, float]],
    quick: bool,
    sw2_grid: Sequence[float] = SW2_GRID,
    sb2_grid: Sequence[float] = SB2_GRID,
) -> Rows:
    """Mean field on the grid, and the measured chi_1 and depth scales on ``points``."""
    grid = [(w, b) for w in sw2_grid for b in sb2_grid]
    sw2 = [w for w, _ in grid] + [w for w, _ in points]
    sb2 = [b for _, b in grid] + [b for _, b in points]
    theory = cr.mean_field(ACTIVATION, sw2, sb2)
    # 16 networks in full: chi_1's error is estimated from them, so its 5-sigma bound is
    # Student's t_sigmas(nets - 1) standard errors (8.3 for 16, 17.1 for 8; phase.py).
    width, nets, depth = (128, 4, 12) if quick else (256, 16, 20)
    rows: Rows = []
    for i, mf in enumerate(theory):
        row = {**mf.as_dict(), "measured": i >= len(grid)}
        if row["measured"]:
            row.update(_measure(mf, width, nets, depth))
        rows.append(_finite(row))
    return rows


def _measure(mf: cr.MeanField, width: int, nets: int, depth: int) -> dict[str, float]:
    w, b, q = mf.sigma_w2, mf.sigma_b2, max(mf.q_star, 1e-3)
    chaotic = mf.c_star < 1.0
    c0 = mf.c_star + 0.3 * (1.0 - mf.c_star) if chaotic else 0.99
    trace = simulate(ACTIVATION, w, b, depth, width, nets, q, c0, 4)
    chi, se = measured_chi_1(trace, 2)
    dc = (trace.c - mf.c_star).mean(dim=1).abs()
    floor_c = 5.0 * (1.0 - mf.c_star**2) / math.sqrt(width * nets * 4) if chaotic else 1e-9
    # q's approach to q*: two trajectories through the same networks (common random
    # numbers), the first XI_Q_LAYERS layers, as the xi_q property measures it.
    decay, _ = length_map_decay(ACTIVATION, w, b, q, XI_Q_LAYERS, width, nets, seed=1)
    xi_c = fitted_depth_scale(dc, floor_c)
    return {
        "measured_chi_1": chi,
        "measured_chi_1_se": se,
        "measured_nets": nets,
        "measured_width": width,
        # a depth scale longer than a third of the simulated depth cannot be fitted
        "measured_xi_c": xi_c if xi_c < depth / 3 else math.nan,
        "measured_xi_q": -1.0 / decay if decay < 0 else math.nan,
    }


def critical_rows() -> Rows:
    sb2 = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0]
    line = cr.critical_sigma_w2(ACTIVATION, sb2)
    return [
        {"activation": ACTIVATION, "sigma_b2": b, "sigma_w2": float(w)}
        for b, w in zip(sb2, line, strict=True)
    ]


def compute(quick: bool) -> dict[str, Rows]:
    """Every table of the two sections, on one thread (the same numbers on any machine)."""
    points = MEASURED[:2] if quick else MEASURED
    with threads(1):
        return {
            "spectrum_depth": spectrum_rows(*(QUICK_SPECTRUM if quick else FULL_SPECTRUM)),
            "spectrum_d2l": d2l_rows(),
            "phase_diagram": phase_rows(points, quick),
            "critical_line": critical_rows(),
        }


def write(store: Store, tables: dict[str, Rows]) -> int:
    return store.write_records_run("spectrum", ["stability", "report", "(spectrum)"], "cpu", tables)
