"""Width and depth scaling: the newest ``stability coord-check``, as mup users know it.

Rows are the store's ``coord_check`` records (per module, size, seed and step), fits and
verdicts (``coord_check_fit``, ``coord_check_verdict``), all written by the command; nothing
is computed here but the figure's means.
"""

from collections.abc import Callable

import pandas as pd
from matplotlib.figure import Figure as MplFigure

from stability.report.figures_scaling import scaling_panels
from stability.report.inputs import ReportData
from stability.report.sections.figure_cache import cached_figure
from stability.report.sections.page import Section, Table

TITLE = "15. Width and depth scaling"
INTRO = (
    "Does the model keep its scale when it is made wider or deeper? Each width (and depth) "
    "was trained a few steps on one batch; per module, the RMS of its output, of the change "
    "of its output since step 0, and of its own weight update applied to its step-0 input "
    "are fitted as a power of the width. Under muP every one of them stays flat "
    "(width^0), so a learning rate tuned on the small model carries to the large one "
    "(Yang et al. 2022, Tensor Programs V; depth: Depth-muP and CompleteP). docs/scaling.md "
    "gives the exponents each parameterisation predicts."
)
NOT_RUN = (
    "No coordinate check in the store: run `stability coord-check` (the built-in MLP) or "
    "`stability coord-check --model examples.transformer_scaling:build --input "
    "examples.transformer_scaling:make_batch --loss cross_entropy`, then the report again."
)
SOURCE = ("Coord-check run {run_id}: --model {model}, --param {param}, --optimizer "
          "{optimizer}, lr {lr}; {modules} modules, widths {widths}{depths}.")  # fmt: skip
ALT = "Per module group, {figures} against {axis} on log-log axes, one line per step."
CAPTION = (
    "A line parallel to the dashed one keeps its scale as the model grows: that module's "
    "hyperparameters transfer. A line that climbs (or falls) away from it is a drift, named "
    "with its exponent in the table below: a climbing output layer is a missing 1/width "
    "output multiplier, a climbing hidden layer an lr not scaled by base/width, lines that "
    "fall with width under Adam an epsilon not scaled with width; against depth, a stream "
    "that climbs is a residual branch without its 1/sqrt(L) (or 1/L) multiplier."
)
TABLE = "Modules whose exponent is not the scale-stable one"
NO_DRIFT = "No module's exponent departs from the scale-stable one beyond its tolerance."
COLUMNS = ["module", "role", "axis", "figure", "step", "local_slope", "slope", "tol", "message"]


def _drawer(rows: pd.DataFrame, fits: pd.DataFrame, axis: str) -> Callable[[], MplFigure]:
    return lambda: scaling_panels(rows, fits, axis)


def scaling(data: ReportData) -> Section:
    section = Section("scaling", TITLE, INTRO)
    rows = data.latest("coord_check")
    if rows.empty:
        section.status = "not run"
        section.notes.append(NOT_RUN)
        return section
    fits = data.latest("coord_check_fit")
    verdicts = data.latest("coord_check_verdict")
    first = rows.iloc[0]
    depths = sorted(int(d) for d in rows["depth"].unique() if d)
    section.notes.append(SOURCE.format(
        run_id=first.get("run_id", "?"), model=first.get("model", "?"),
        param=first.get("param", "?"), optimizer=first.get("optimizer", "?"),
        lr=first.get("lr", "?"), modules=rows["module"].nunique(),
        widths=",".join(str(int(w)) for w in sorted(rows["width"].unique())),
        depths=f", depths {','.join(map(str, depths))}" if len(depths) > 1 else ""))  # fmt: skip
    for axis in ("width", "depth"):
        if rows[axis].nunique() < 2 or fits.empty or not (fits["axis"] == axis).any():
            continue
        section.figures.append(cached_figure(
            data, f"scaling-{axis}", [rows, fits], _drawer(rows, fits, axis),
            ALT.format(figures="output, change and update RMS", axis=axis), CAPTION))  # fmt: skip
    drift = verdicts[verdicts["verdict"] == "drift"] if not verdicts.empty else verdicts
    if len(drift) and "local_slope" in drift.columns:  # the largest departure first
        drift = drift.assign(_by=(drift["local_slope"] - drift["target"]).abs())
        drift = drift.sort_values("_by", ascending=False).drop(columns="_by")
    if len(drift):
        shown = drift[[c for c in COLUMNS if c in drift.columns]]
        section.tables.append(Table("scaling", TABLE, pd.DataFrame(shown), wrap=True))
    else:
        section.notes.append(NO_DRIFT)
    n = len(verdicts)
    stable = int(verdicts["verdict"].str.endswith("-stable").sum()) if n else 0
    section.verdict = f"{stable} of {n} module checks scale-stable"
    if len(drift):
        section.judge("warn", f"{len(drift)} of {n} drift; first: {drift.iloc[0]['message']}")
    else:
        section.judge("pass", section.verdict)
    return section
