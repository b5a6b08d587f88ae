"""2. Stability atlas: per-layer variances, measured against mean-field theory."""

import re

import pandas as pd

from stability.report import figures
from stability.report.inputs import ReportData
from stability.report.sections.figure_cache import cached_figure
from stability.report.sections.page import Section, Table
from stability.report.sections.rows import (
    CONFIG,
    NO_SWEEP,
    atlas_rows,
    axes,
    judged,
    left_out,
    shape_label,
)

TITLE = "2. Stability atlas"
INTRO = (
    "For each activation (rows) and initialisation (columns): log10 of the per-layer "
    "variance of a depth-L MLP. The band spans the seeds (min to max), the solid line is "
    "their median, the dashed black line the mean-field prediction, the green band the "
    "stable band (a line leaving it is what the heat map calls exploding or vanishing). "
    "Forward: the "
    "pre-activation variance of each layer for x ~ N(0, 1). Backward: the variance of the "
    "gradient at each layer's output, for a loss whose gradient at the top has variance 1."
)
CONFIGURATION = "Configuration: {label}."
ONE_SEED = "Only one seed: the band is a line. The full run uses three."
ALT = (
    "Grid of {rows} by {cols} small plots of log10 {direction} variance "
    "against layer, measured band with dashed mean-field prediction."
)
CAPTION = (
    "{Direction}: lines that stay in the green band keep {what} alive; lines leaving it "
    "at the top explode, at the bottom vanish. Where the band hugs the dashed line, "
    "mean-field theory predicts this network. {clip}"
)
CLIP = (
    "The axis stops at ±{clip:.0f} decades, past where the verdict changes: larger values "
    "(including inf and exactly 0) sit on the rim; their size is in the heat map."
)
BAND_CAPTION = (
    "The hatched band is the predicted finite-width band: where 90 % of seeds should fall at "
    "this width and batch (docs/theory.md). A seed outside it, or a band far from the "
    "measured one, means the theory's assumptions fail there; the verdict table's "
    "band_verdict and theory_caveat columns say which configs and why."
)
CAVEAT = "Theory's assumptions fail for {configs}: {why}."
CAVEAT_FIGURE = re.compile(r"\s*\([^()]*\d[^()]*\)")  # "(8% of the second moment)"
BAND_COLUMNS = (
    "pred_log10_preact_var_lo",
    "pred_log10_preact_var_hi",
    "pred_log10_grad_var_lo",
    "pred_log10_grad_var_hi",
    "theory_caveat",
)
BAND_HEALTH = "{outside} of {total} drawn configs have a seed outside the predicted band"
BAND_UNSTABLE = (
    "{n} of them are unstable (they vanish, explode or go non-finite: their variances travel "
    "many decades, often past the dtype's range) ({names})"
)
BAND_STABLE = "{n} are stable, and there the theory misses ({names})"
ELSEWHERE = (
    "The atlas draws one dtype of the main shape; every config's growth is in the heat map "
    "(section 3) and every config's per-layer variances in atlas.csv."
)
TABLE = "Per-layer variances of every stored config (median and range over seeds)"
HEALTH = "{bad} of {total} drawn configs leave the ±2-decade stable band ({dtype})"
HEALTHY = "all {total} drawn configs stay within the ±2-decade stable band ({dtype})"


def band_note(out: pd.DataFrame, total: int) -> str:
    """The configs outside the band, split by what it means: an unstable config's variance
    has left the representable range (expected); a stable one's is a miss of the theory."""
    unstable = out["verdict"] != "stable" if "verdict" in out.columns else out["init"].isna()
    parts = [BAND_HEALTH.format(outside=len(out), total=total)]
    for mask, text in ((unstable, BAND_UNSTABLE), (~unstable, BAND_STABLE)):
        if mask.any():
            names = ", ".join(
                f"{a}/{i}" for a, i in zip(out["activation"][mask], out["init"][mask], strict=True)
            )
            parts.append(text.format(n=int(mask.sum()), names=names))
    return "; ".join(parts) + "."


def caveat_notes(marked: pd.DataFrame) -> list[str]:
    """One note per reason, naming every config it marks: a dozen configs share one reason,
    and a bullet each buried the atlas. Per-config figures stay in the theory_caveat column."""
    groups: dict[str, list[str]] = {}
    for r in marked.itertuples(index=False):
        why = CAVEAT_FIGURE.sub("", str(r.theory_caveat))
        groups.setdefault(why, []).append(f"{r.activation}/{r.init}")
    return [CAVEAT.format(configs=", ".join(names), why=why) for why, names in groups.items()]


def atlas(data: ReportData) -> Section:
    section = Section("atlas", TITLE, INTRO)
    rows = atlas_rows(data)
    if rows.empty:
        section.status = "not run"
        section.notes.append(NO_SWEEP)
        return section
    acts, inits = axes(rows)
    seeds = rows["seed"].nunique()
    label = f"{rows['dtype'].iloc[0]}, {shape_label(rows)}, {seeds} seed(s)"
    section.notes.append(CONFIGURATION.format(label=label))
    if seeds < 2:
        section.notes.append(ONE_SEED)
        section.status = "partial"
    clip = CLIP.format(clip=figures.ATLAS_LIMIT)
    for direction, measured, theory, color, what, ref in (
        ("forward", "preact_var", "theory_preact_var", figures.FORWARD_COLOR, "signals", "first"),
        ("backward", "grad_var", "theory_grad_var", figures.BACKWARD_COLOR, "gradients", "last"),
    ):
        band = (f"pred_log10_{measured}_lo", f"pred_log10_{measured}_hi")
        has_band = set(band) <= set(rows.columns)
        cols = ["activation", "init", "seed", "layer", measured, theory]
        cols += list(band) if has_band else []
        caption = CAPTION.format(Direction=direction.capitalize(), what=what, clip=clip)
        section.figures.append(
            cached_figure(
                data,
                f"atlas-{direction}",
                [rows[cols].reset_index(drop=True), acts, inits, color],
                lambda m=measured, t=theory, c=color, r=ref, b=band: figures.atlas(  # type: ignore[misc]
                    rows, m, t, acts, inits, c, "log10 var", r, b
                ),
                ALT.format(rows=len(acts), cols=len(inits), direction=direction),
                caption + (" " + BAND_CAPTION if has_band else ""),
                fmt="png",  # dozens of panels of dense lines: an SVG of them weighs ~0.8 MB
            )
        )
    skipped = left_out(data, rows, ELSEWHERE)
    if skipped:
        section.notes.append(skipped)
    drawn = judged(data).merge(rows.drop_duplicates(CONFIG)[CONFIG], on=CONFIG)
    bad = int((drawn["verdict"] != "stable").sum())
    dtype = str(rows["dtype"].iloc[0])
    if bad:
        section.judge("warn", HEALTH.format(bad=bad, total=len(drawn), dtype=dtype))
    else:
        section.judge("pass", HEALTHY.format(total=len(drawn), dtype=dtype))
    if "band_verdict" in drawn.columns:
        out = drawn[drawn["band_verdict"] == "outside"]
        if not out.empty:
            section.notes.append(band_note(out, len(drawn)))
    if "theory_caveat" in drawn.columns:
        marked = drawn[drawn["theory_caveat"].fillna("") != ""]
        section.notes += caveat_notes(marked)
    band_cols = [c for c in BAND_COLUMNS if c in data.sweep.columns]
    per_layer = (
        data.sweep.groupby([*CONFIG, "layer"])
        .agg(
            preact_var_median=("preact_var", "median"),
            preact_var_min=("preact_var", "min"),
            preact_var_max=("preact_var", "max"),
            theory_preact_var=("theory_preact_var", "first"),
            grad_var_median=("grad_var", "median"),
            grad_var_min=("grad_var", "min"),
            grad_var_max=("grad_var", "max"),
            theory_grad_var=("theory_grad_var", "first"),
            **{c: (c, "first") for c in band_cols},
        )
        .reset_index()
    )
    section.tables.append(Table("atlas", TABLE, per_layer, show=False))
    return section
