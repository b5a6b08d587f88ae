"""2. Stability atlas: per-layer variances, measured against mean-field theory."""

from stability.report import figures
from stability.report.inputs import ReportData
from stability.report.sections.figure_cache import cached_figure
from stability.report.sections.page import Section, Table
from stability.report.sections.rows import NO_SWEEP, atlas_rows, axes, shape_label

TITLE = "2. Stability atlas"
INTRO = (
    "For each activation (rows) and initialisation (columns): log10 of the per-layer "
    "variance of a depth-L MLP. The band spans the seeds (min to max), the solid line is "
    "their median, the dashed black line the mean-field prediction. Forward: the "
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
    "{Direction}: flat lines near 0 keep {what} alive; lines rising to "
    "the top edge explode, falling ones vanish. Where the band hugs the dashed line, "
    "mean-field theory predicts this network. {clip}"
)
CLIP = "Values beyond 1e±{clip:.0f} (including inf and exactly 0) sit on the rim."
TABLE = "Per-layer variances behind the atlas (median and range over seeds)"


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
    clip = CLIP.format(clip=figures.LOG_CLIP)
    for direction, measured, theory, color, what in (
        ("forward", "preact_var", "theory_preact_var", figures.FORWARD_COLOR, "signals"),
        ("backward", "grad_var", "theory_grad_var", figures.BACKWARD_COLOR, "gradients"),
    ):
        cols = ["activation", "init", "seed", "layer", measured, theory]
        section.figures.append(
            cached_figure(
                data,
                f"atlas-{direction}",
                [rows[cols].reset_index(drop=True), acts, inits, color],
                lambda m=measured, t=theory, c=color: figures.atlas(  # type: ignore[misc]
                    rows, m, t, acts, inits, c, "log10 var"
                ),
                ALT.format(rows=len(acts), cols=len(inits), direction=direction),
                CAPTION.format(Direction=direction.capitalize(), what=what, clip=clip),
            )
        )
    per_layer = (
        rows.groupby(["activation", "init", "layer"])
        .agg(
            preact_var_median=("preact_var", "median"),
            preact_var_min=("preact_var", "min"),
            preact_var_max=("preact_var", "max"),
            theory_preact_var=("theory_preact_var", "first"),
            grad_var_median=("grad_var", "median"),
            grad_var_min=("grad_var", "min"),
            grad_var_max=("grad_var", "max"),
            theory_grad_var=("theory_grad_var", "first"),
        )
        .reset_index()
    )
    section.tables.append(Table("atlas", TABLE, per_layer, show=False))
    return section
