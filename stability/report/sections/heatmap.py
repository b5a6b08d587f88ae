"""3. Heat map: log10 variance growth from the first to the last layer, with verdicts."""

import pandas as pd

from stability.report import figures
from stability.report.inputs import ReportData
from stability.report.sections.figure_cache import cached_figure
from stability.report.sections.page import Section, Table
from stability.report.sections.rows import NO_SWEEP, atlas_rows, axes
from stability.results.tables import growth_table, summary_table

TITLE = "3. Heat map: growth from first to last layer"
INTRO = (
    "log10 of the last layer's variance over the first layer's, averaged over seeds: "
    "forward (pre-activations) and backward (gradients, first layer over last). 0 means "
    "the variance is preserved; +2 means it grew a hundredfold."
)
ALT = (
    "Two heat maps, forward and backward, of log10 variance growth by activation and "
    "initialisation, red for growth and blue for decay."
)
CAPTION = (
    "Red cells explode, blue cells vanish, white cells keep the variance. Each cell "
    "shows the measured value and, in brackets, the mean-field prediction; grey (nan) "
    "means the network produced non-finite values."
)
VERDICTS = "Verdicts ({dtype}, |log10 growth| > 2 counts as exploding or vanishing): {verdict}."
TABLE = "Growth per configuration, with verdict"


def _pivot(table: pd.DataFrame, column: str, acts: list[str], inits: list[str]) -> pd.DataFrame:
    return table.pivot(index="activation", columns="init", values=column).reindex(
        index=acts, columns=inits
    )


def heatmap(data: ReportData) -> Section:
    section = Section("heatmap", TITLE, INTRO)
    rows = atlas_rows(data)
    if rows.empty:
        section.status = "not run"
        section.notes.append(NO_SWEEP)
        return section
    table = growth_table(rows)
    acts, inits = axes(rows)
    panels = [
        ("forward", _pivot(table, "fwd_log10_growth", acts, inits),
         _pivot(table, "theory_fwd", acts, inits)),
        ("backward", _pivot(table, "bwd_log10_growth", acts, inits),
         _pivot(table, "theory_bwd", acts, inits)),
    ]  # fmt: skip
    section.figures.append(
        cached_figure(
            data,
            "heatmap",
            [frame for panel in panels for frame in panel[1:] if frame is not None],
            lambda: figures.growth_heatmaps(panels),
            ALT,
            CAPTION,
        )
    )
    summary = summary_table(rows)
    counts = summary["verdict"].value_counts()
    section.verdict = (
        ", ".join(f"{n} {v}" for v, n in counts.items()) + f" of {len(summary)} configs"
    )
    section.notes.append(VERDICTS.format(dtype=rows["dtype"].iloc[0], verdict=section.verdict))
    section.tables.append(Table("growth", TABLE, summary))
    return section
