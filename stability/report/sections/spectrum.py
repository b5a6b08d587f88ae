"""The input-output Jacobian's spectrum per depth, beside free probability's moments.

Rows: ``spectrum_depth`` and ``spectrum_d2l`` records (``report/spectrum_cases.py``).
"""

import numpy as np
import pandas as pd

from stability.report import figures_spectrum
from stability.report.inputs import ReportData
from stability.report.sections.figure_cache import cached_figure
from stability.report.sections.page import Section, Table

TITLE = "12. Jacobian spectrum: dynamical isometry"
INTRO = (
    "A variance can be preserved while the singular values of the input-output Jacobian "
    "J spread over decades; how they spread decides trainability (Saxe et al. 2014; "
    "Pennington, Schoenholz and Ganguli 2017). Each network sits at its critical point "
    "(mean eigenvalue of J J^T = 1 at every depth): linear and relu at sigma_w^2 = 1 and 2, "
    "tanh at the point 'stability criticality' recommends. Derivations: docs/spectrum.md."
)
BANDS_ALT = "Quantiles of log10 singular values of J against depth, per activation and weight law."
BANDS_CAPTION = (
    "Conclude: only orthogonal weights with tanh (or linear) keep the singular values "
    "near 1 (grey band: within a factor 10) as depth grows. Gaussian weights, and relu "
    "with either law, spread them over decades even though their mean stays 1: "
    "variance-preserving is not enough, the spectrum's width grows like depth."
)
MOMENTS_ALT = "Measured against predicted normalised variance of J J^T's eigenvalues."
MOMENTS_CAPTION = (
    "Conclude: the free-probability variance (normalised: depth x (r_W + mu_2/mu_1^2 - 1)) "
    "predicts the measured spread; points sit on the diagonal up to one network's "
    "fluctuation, drifting above it where depth approaches the width."
)
TABLE = "Per depth: mean and variance of J J^T's eigenvalues, measured and predicted"
D2L = (
    "The notes' product of 100 random 4x4 N(0, 1) matrices as a spectrum (8 seeds, float64): "
    "the top singular value grows at the Lyapunov rate; the smallest is lost to rounding "
    "past ~50 factors, where the condition number saturates near float64's 1e16-1e17"
)
COLUMNS = ["activation", "weights", "depth", "jj_mean", "predicted_jj_mean", "jj_var",
           "predicted_jj_var", "log10_condition", "within_10"]  # fmt: skip
AGREE_DECADES = 0.3  # |log10(measured / predicted)| of the mean allowed where depth <= width/4


def numeric(frame: pd.DataFrame) -> pd.DataFrame:
    """Stored inf/NaN come back as strings: turn every convertible column back to floats."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object:
            converted = pd.to_numeric(out[column], errors="coerce")
            if converted.notna().sum() >= out[column].notna().sum() and out[column].notna().any():
                out[column] = converted
    return out


def spectrum_section(data: ReportData) -> Section:
    section = Section("spectrum", TITLE, INTRO)
    rows = numeric(data.latest("spectrum_depth"))
    if rows.empty:
        section.status = "not run"
        section.notes.append("No spectrum was stored: run 'stability report' to compute one.")
        return section
    section.figures.append(cached_figure(data, "spectrum-bands", [rows],
        lambda: figures_spectrum.spectrum_bands(rows), BANDS_ALT, BANDS_CAPTION))  # fmt: skip
    section.figures.append(cached_figure(data, "spectrum-moments", [rows],
        lambda: figures_spectrum.moment_agreement(rows), MOMENTS_ALT, MOMENTS_CAPTION))  # fmt: skip
    section.tables.append(Table("spectrum-depth", TABLE, rows[COLUMNS]))
    d2l = numeric(data.latest("spectrum_d2l"))
    if not d2l.empty:
        section.tables.append(Table("spectrum-d2l", D2L, d2l))
    shallow = rows[rows["depth"] <= rows["width"] / 4]
    off = np.abs(np.log10(shallow["jj_mean"] / shallow["predicted_jj_mean"]))
    worst = float(off.max()) if len(off) else 0.0
    iso = rows[(rows["activation"] == "tanh") & (rows["weights"] == "orthogonal")]
    deepest = iso[iso["depth"] == iso["depth"].max()]["within_10"]
    iso_frac = float(deepest.iloc[0]) if len(deepest) else float("nan")
    section.verdict = (
        f"tanh + orthogonal at criticality: {iso_frac:.0%} of singular values within a factor "
        f"10 of 1 at depth {int(rows['depth'].max())}; mean of J J^T within {worst:.2f} decades "
        "of free probability"
    )
    if worst > AGREE_DECADES:
        section.judge("warn", f"measured mean of J J^T {worst:.2f} decades off the prediction")
    else:
        section.judge("pass", section.verdict)
    return section
