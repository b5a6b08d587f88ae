"""The first screen: the overall state, the recommendation, the worst offenders, the health
of each section.

Nothing is judged here that a section or ``results.tables`` did not: the state is the
worst section health (``page.overall``), the recommendation is ``recommendations`` of the
stored sweep for the main shape, the offenders are ``offenders``. This module selects and
words them, and hands the template a grid it can colour.
"""

from dataclasses import dataclass, field

import pandas as pd

from stability.report.inputs import ReportData
from stability.report.sections.page import Section, State, Table, overall
from stability.report.sections.rows import axes, dtypes, judged, shape_label, shape_rows
from stability.results.tables import BORDERLINE, offenders, recommendations
from stability.results.verdict_words import BAND

STATE_WORDS: dict[State, str] = {
    "healthy": "Healthy: every section passed",
    "warnings": "Warnings: nothing failed, but some results need a look",
    "failures": "Failures: something failed or could not be judged",
    "nothing run": "Nothing run yet",
}
RECOMMENDATION = (
    "Which init keeps forward and backward variance within ±{band:g} decades (first to last "
    "layer) at {shape}: per activation and dtype, the best init and the weight scale it uses "
    "(σw² = fan_in·Var(W), the gain squared), then the other inits that also stay stable."
)
NO_RECOMMENDATION = "No sweep in the store yet: nothing to recommend."
OTHER_SHAPES = "Other network shapes in the store ({shapes}): in recommendation.csv."
BORDERLINE_NOTE = (
    "≈ marks a borderline verdict: within {near:.0%} of the band edge, where a hair decides it."
)
OFFENDERS = "Worst offenders (of {bad} unstable configs): what fails, where and why"
NO_OFFENDERS = "No offenders: every stored config stays within the band."
CSV_RECOMMENDATION = "Recommended inits per activation, dtype and shape"
CSV_OFFENDERS = "Worst offenders"


@dataclass(frozen=True)
class Cell:
    """One activation x dtype cell of the recommendation grid."""

    kind: str  # "ok", "borderline", "none", "not run"
    best: str = ""
    scale: str = ""
    also: str = ""
    count: str = ""


@dataclass
class Summary:
    """What the template shows above the sections."""

    state: State
    words: str
    reasons: list[str]
    intro: str
    dtypes: list[str] = field(default_factory=list)
    grid: list[tuple[str, list[Cell]]] = field(default_factory=list)  # activation, cells
    notes: list[str] = field(default_factory=list)
    offenders_title: str = ""
    offenders: list[tuple[str, str, str]] = field(default_factory=list)  # config, verdict, why
    sections: list[Section] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)  # written as CSV beside the page
    by_health: list[tuple[str, str]] = field(default_factory=list)  # "failed", its sections


def _scale(value: float) -> str:
    return "data-driven" if pd.isna(value) else f"σw² {value:.3g}"


def _cell(row: pd.Series | None) -> Cell:
    if row is None:
        return Cell("not run")
    count = f"{row['stable']} of {row['tried']} inits stable"
    if pd.isna(row["best_init"]) or row["best_init"] is None:
        return Cell("none", "none stable", "", f"closest: {row['closest']}", count)
    kind = "borderline" if row["best_borderline"] else "ok"
    return Cell(kind, str(row["best_init"]), _scale(row["best_sigma_w2"]), str(row["also"]), count)


def summarise(data: ReportData, sections: list[Section]) -> Summary:
    """The page's verdict box from the drawn sections and the judged sweep."""
    state, reasons = overall(sections)
    main = shape_rows(data.sweep)
    intro = NO_RECOMMENDATION
    if not main.empty:
        intro = RECOMMENDATION.format(band=BAND, shape=shape_label(main))
    summary = Summary(state, STATE_WORDS[state], reasons, intro, sections=sections)
    for health, label in (("fail", "failed"), ("warn", "warnings"), ("not run", "not run")):
        titles = [s.title for s in sections if s.health == health]
        if titles:
            summary.by_health.append((label, ", ".join(titles)))
    table = judged(data)
    if table.empty or main.empty:
        return summary
    recs = recommendations(table)
    summary.tables.append(Table("recommendation", CSV_RECOMMENDATION, recs, show=False))
    first = main.iloc[0]
    here = recs[
        (recs["depth"] == first["depth"])
        & (recs["width"] == first["width"])
        & (recs["batch"] == first["batch"])
    ]
    acts, _ = axes(main)
    summary.dtypes = dtypes(main)
    for act in acts:
        cells = []
        for dtype in summary.dtypes:
            match = here[(here["activation"] == act) & (here["dtype"] == dtype)]
            cells.append(_cell(match.iloc[0] if not match.empty else None))
        summary.grid.append((act, cells))
    others = recs.drop(here.index)
    if not others.empty:
        shapes = others.drop_duplicates(["depth", "width", "batch"])
        summary.notes.append(
            OTHER_SHAPES.format(
                shapes="; ".join(
                    f"depth {r.depth}, width {r.width}, batch {r.batch}"
                    for r in shapes.itertuples(index=False)
                )
            )
        )
    if (here["best_borderline"]).any():
        summary.notes.append(BORDERLINE_NOTE.format(near=BORDERLINE))
    worst = offenders(table)
    bad = int((table["verdict"] != "stable").sum())
    summary.offenders_title = OFFENDERS.format(bad=bad) if bad else NO_OFFENDERS
    if not worst.empty:
        summary.tables.append(Table("offenders", CSV_OFFENDERS, worst, show=False))
        for r in worst.itertuples(index=False):
            config = f"{r.activation}/{r.init}, depth {r.depth}, width {r.width} ({r.fails_in})"
            summary.offenders.append((config, str(r.verdict), f"{r.dtype}: {r.reason}"))
    return summary
