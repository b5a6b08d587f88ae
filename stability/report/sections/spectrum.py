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
    "tanh at the point 'stability criticality' recommends. Free probability is "
    "width-infinite: one network's mean eigenvalue of J J^T sits below it by half the "
    "variance of its log (tanh: slightly above, through the inputs' own norm) and spreads "
    "by that sd, so the measured mean is judged against that finite-width band, warned "
    "beyond 3 of its sds (taken 1.5x for the band's own error). Derivations: "
    "docs/spectrum.md."
)
BANDS_ALT = "Quantiles of log10 singular values of J against depth, per activation and weight law."
BANDS_CAPTION = (
    "Conclude: only orthogonal weights with tanh at its critical point (or linear) keep "
    "the singular values near 1 (grey band: within a factor 10) as depth grows. Gaussian "
    "weights, and relu "
    "with either law, spread them over decades even though their mean stays 1: "
    "variance-preserving is not enough, the spectrum's width grows like depth."
)
MOMENTS_ALT = "Measured against predicted normalised variance of J J^T's eigenvalues."
MOMENTS_CAPTION = (
    "Conclude: where depth <= width/4 (filled) free probability's normalised variance "
    "(depth x (r_W + mu_2/mu_1^2 - 1)) predicts the spread of J J^T's eigenvalues: one "
    "network sits within its seed-to-seed spread (about 15 %) of it, plus a finite-width "
    "excess that shrinks with width (relu: +33 % at width 64, +13 % at 128, depth 16). "
    "Beyond (hollow) finite width bends it: one input's J J^T has n eigenvalues, so its "
    "normalised variance cannot pass n - 1 while free probability's grows without bound."
)
TABLE = (
    "Per depth: mean and variance of J J^T's eigenvalues, measured and predicted; "
    "'mean_off' is log10(measured / predicted mean), judged against the finite-width band "
    "(band_log10_offset +- band_log10_sd: where one network's log10 mean falls)"
)
D2L = (
    "The notes' product of 100 random 4x4 N(0, 1) matrices as a spectrum (8 seeds, float64): "
    "the top singular value grows at the Lyapunov rate; the smallest is lost to rounding "
    "past ~50 factors, where the condition number saturates near float64's 1e16-1e17"
)
COLUMNS = ["activation", "weights", "depth", "jj_mean", "predicted_jj_mean", "mean_off",
           "band_log10_offset", "band_log10_sd", "jj_var", "predicted_jj_var",
           "log10_condition", "within_10"]  # fmt: skip
BAND_Z = 3.0  # one network's log10 mean beyond 3 sd of the band: a real miss (0.3 % a row)
# The band's own model error: over 32 seeds at widths 64/128, depths 16-64, the measured
# sd is 0.72-1.45x the band's (docs/spectrum.md), so its sd counts 1.5x; ROUNDING (decades)
# covers float32 weights where the band says exactly 0 (linear, orthogonal).
BAND_MODEL = 1.5
ROUNDING = 1e-6


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
    if "band_log10_sd" not in rows:  # stored before the band existed: judged as unknown
        rows = rows.assign(band_log10_offset=np.nan, band_log10_sd=np.nan)
    rows = rows.assign(mean_off=np.log10(rows["jj_mean"] / rows["predicted_jj_mean"]))
    section.tables.append(Table("spectrum-depth", TABLE, rows[COLUMNS]))
    d2l = numeric(data.latest("spectrum_d2l"))
    if not d2l.empty:
        section.tables.append(Table("spectrum-d2l", D2L, d2l))
    judged = judge_mean(rows)
    worst = judged.iloc[int(np.argmax(judged["z"].to_numpy()))] if len(judged) else None
    iso = rows[(rows["activation"] == "tanh") & (rows["weights"] == "orthogonal")]
    deepest = iso[iso["depth"] == iso["depth"].max()]["within_10"]
    iso_frac = float(deepest.iloc[0]) if len(deepest) else float("nan")
    section.verdict = (
        f"tanh + orthogonal at criticality: {iso_frac:.0%} of singular values within a factor "
        f"10 of 1 at depth {int(rows['depth'].max())}; "
        + (
            f"measured mean of J J^T within {worst['z']:.1f} sd of its finite-width band "
            f"(farthest: {worst['activation']}/{worst['weights']} at depth "
            f"{int(worst['depth'])}, {worst['mean_off']:+.2f} decades from free probability, "
            f"band {worst['band_log10_offset']:+.2f} +- {worst['band_log10_sd']:.2f})"
            if worst is not None
            else "no finite-width band stored"
        )
    )
    section.notes.append(variance_note(rows))
    if worst is not None and worst["z"] > BAND_Z:
        section.judge(
            "warn",
            f"measured mean of J J^T outside its finite-width band: {worst['activation']}/"
            f"{worst['weights']} at depth {int(worst['depth'])} is {worst['mean_off']:+.2f} "
            f"decades from free probability, {worst['z']:.1f} sd from the band's centre",
        )
    else:
        section.judge("pass", section.verdict)
    return section


def judge_mean(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with a band, and ``z``: how many (model-widened) band sds the measured log10
    mean sits from the band's centre (free probability's log10 mean plus its offset)."""
    ok = rows[np.isfinite(rows["band_log10_sd"]) & np.isfinite(rows["mean_off"])]
    sd = np.sqrt((BAND_MODEL * ok["band_log10_sd"]) ** 2 + ROUNDING**2)
    out: pd.DataFrame = ok.assign(z=np.abs(ok["mean_off"] - ok["band_log10_offset"]) / sd)
    return out


def variance_note(rows: pd.DataFrame) -> str:
    """Where free probability's variance holds (depth <= width/4), how close; beyond, marked."""
    ratio = (rows["jj_var"] / rows["jj_mean"] ** 2) / rows["predicted_normalised_var"]
    shallow = rows["depth"] <= rows["width"] / 4
    ok = np.isfinite(ratio) & (rows["predicted_normalised_var"] > 1e-6)
    near, far = ratio[ok & shallow], ratio[ok & ~shallow]
    text = (
        "Variance of J J^T's eigenvalues (normalised by the mean squared): measured over "
        f"predicted {near.min():.2f} to {near.max():.2f} where depth <= width/4"
        if len(near)
        else "Variance of J J^T's eigenvalues: no row with depth <= width/4"
    )
    if len(far):
        text += (
            f", {far.min():.2f} to {far.max():.2f} beyond, where it is not judged: at finite "
            "width one input's normalised variance is capped at n - 1 (n eigenvalues) and "
            "its O(depth/width) corrections are no longer small"
        )
    return text + ". Linear layers with orthogonal weights: exactly 0 (J J^T = I)."
