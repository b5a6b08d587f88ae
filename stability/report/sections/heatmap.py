"""3. Heat map: log10 variance growth from the first to the last layer, with verdicts.

One heat map per dtype of the main shape (the first open, the others folded), growth
against depth when the grid has several depths, and every stored config's verdict, margin
and reason in one table. The verdicts come from ``results.tables.judged_table``.
"""

import pandas as pd

from stability.report import figures, figures_growth
from stability.report.inputs import ReportData
from stability.report.sections.figure_cache import cached_figure
from stability.report.sections.page import Section, Table
from stability.report.sections.rows import (
    NO_SWEEP,
    axes,
    depth_families,
    dtypes,
    judged,
    left_out,
    shape_label,
    shape_rows,
)
from stability.results.tables import BORDERLINE
from stability.results.verdict_words import BAND

TITLE = "3. Heat map: growth from first to last layer"
INTRO = (
    "log10 of the last layer's variance over the first layer's, averaged over seeds: "
    "forward (pre-activations) and backward (gradients, first layer over last). 0 means "
    "the variance is preserved; +2 means it grew a hundredfold. Beyond ±{band:g} a config "
    "explodes or vanishes."
)
ALT = (
    "Two heat maps, forward and backward, of log10 variance growth by activation and "
    "initialisation in {dtype}, red for growth and blue for decay, pale inside the band."
)
CAPTION = (
    "{dtype}, {shape}. Pale cells stay within ±{band:g} decades (stable); strong red "
    "explodes, strong blue vanishes; colours saturate at ±{sat:g}, where the verdict no "
    "longer changes (the printed value still says how far). In brackets: the mean-field "
    "prediction. Dashed outline: borderline, within {near:.0%} of the band edge. Dark grey: "
    "non-finite values in the network."
)
FOLD = "{dtype} heat map: {verdict}"
DEPTH_ALT = (
    "log10 growth against depth, forward and backward, one panel per activation, one line "
    "per init and line style per dtype, with the stable band shaded."
)
DEPTH_CAPTION = (
    "Growth against depth for {shape_family}: a line that leaves the green band at some "
    "depth explodes or vanishes from there on. The axis saturates at ±{sat:g}."
)
ELSEWHERE = "They are in the verdict table below and growth.csv."
DEPTH_FOLD = "Growth against depth, {shape}"
MAX_FAMILIES = 4  # growth-against-depth figures drawn; more shapes are in the table
VERDICTS = "Verdicts (|log10 growth| > {band:g} counts as exploding or vanishing): {verdict}."
TABLE = (
    "Every stored config: growth, verdict, distance to the band edge (margin, decades; "
    "negative = beyond) and why, unstable first"
)
HEALTH = "{bad} of {total} configs explode, vanish or go non-finite ({counts})"
HEALTHY = "all {total} configs stay within ±{band:g} decades"
BORDERLINE_NOTE = "{n} verdicts are borderline (within {near:.0%} of the band edge): {configs}."


def _pivot(table: pd.DataFrame, column: str, acts: list[str], inits: list[str]) -> pd.DataFrame:
    return table.pivot(index="activation", columns="init", values=column).reindex(
        index=acts, columns=inits
    )


def _counts(table: pd.DataFrame) -> str:
    counts = table["verdict"].value_counts()
    return ", ".join(f"{n} {v}" for v, n in counts.items()) + f" of {len(table)} configs"


def heatmap(data: ReportData) -> Section:
    section = Section("heatmap", TITLE, INTRO.format(band=BAND))
    main = shape_rows(data.sweep)
    if main.empty:
        section.status = "not run"
        section.notes.append(NO_SWEEP)
        return section
    every = judged(data)
    first = main.iloc[0]
    shown = every[
        (every["depth"] == first["depth"])
        & (every["width"] == first["width"])
        & (every["batch"] == first["batch"])
    ]
    acts, inits = axes(main)
    for n, dtype in enumerate(dtypes(main)):
        table = shown[shown["dtype"] == dtype]
        missing = _pivot(table.assign(m=False), "m", acts, inits).isna()
        panels = [
            (f"{direction} ({dtype})", _pivot(table, measured, acts, inits),
             _pivot(table, theory, acts, inits),
             _pivot(table, f"{short}_borderline", acts, inits).fillna(False), missing)
            for direction, short, measured, theory in (
                ("forward", "fwd", "fwd_log10_growth", "theory_fwd"),
                ("backward", "bwd", "bwd_log10_growth", "theory_bwd"),
            )
        ]  # fmt: skip
        caption = CAPTION.format(dtype=dtype, shape=shape_label(main), band=BAND,
                                 sat=figures.SATURATE, near=BORDERLINE)  # fmt: skip
        section.figures.append(
            cached_figure(
                data,
                f"heatmap-{dtype}",
                [frame for panel in panels for frame in panel[1:]],
                lambda p=panels: figures_growth.growth_heatmap(p),  # type: ignore[misc]
                ALT.format(dtype=dtype),
                caption,
                fold="" if n == 0 else FOLD.format(dtype=dtype, verdict=_counts(table)),
            )
        )
    drawn = main
    for n, family in enumerate(depth_families(data.sweep)[:MAX_FAMILIES]):
        _growth_vs_depth(data, section, every, family, acts, inits, fold=n > 0)
        drawn = pd.concat([drawn, family])
    skipped = left_out(data, drawn, ELSEWHERE)
    if skipped:
        section.notes.append(skipped)
    section.verdict = _counts(every)
    section.notes.append(VERDICTS.format(band=BAND, verdict=section.verdict))
    edge = every[every["borderline"]]
    if not edge.empty:
        names = [f"{r.activation}/{r.init} {r.dtype} ({r.worst_log10_growth:+.2f})"
                 for r in edge.head(8).itertuples(index=False)]  # fmt: skip
        section.notes.append(
            BORDERLINE_NOTE.format(n=len(edge), near=BORDERLINE, configs=", ".join(names))
        )
    bad = every[every["verdict"] != "stable"]
    if bad.empty:
        section.judge("pass", HEALTHY.format(total=len(every), band=BAND))
    else:
        counts = bad["verdict"].value_counts()
        section.judge("warn", HEALTH.format(bad=len(bad), total=len(every),
                      counts=", ".join(f"{n} {v}" for v, n in counts.items())))  # fmt: skip
    columns = ["activation", "init", "dtype", "depth", "width", "batch", "verdict", "reason",
               "fwd_log10_growth", "theory_fwd", "bwd_log10_growth", "theory_bwd", "margin",
               "borderline", "sigma_w2", "seeds", "nonfinite", "precision_mode"]  # fmt: skip
    order = every.assign(_rank=(every["verdict"] == "stable").astype(int)).sort_values(
        ["_rank", "margin"]
    )
    section.tables.append(Table("growth", TABLE, order[columns].round(3)))
    return section


def _growth_vs_depth(
    data: ReportData,
    section: Section,
    every: pd.DataFrame,
    family: pd.DataFrame,
    acts: list[str],
    inits: list[str],
    fold: bool,
) -> None:
    """One growth-against-depth figure for a shape run at several depths."""
    keys = ["activation", "init", "dtype", "depth", "width", "batch"]
    deep = every.merge(family.drop_duplicates(keys)[keys], on=keys)
    kinds = dtypes(family)
    first = family.iloc[0]
    depths = ", ".join(str(d) for d in sorted(family["depth"].unique()))
    shape = f"width {first['width']}, batch {first['batch']}, depths {depths}"
    columns = [*keys[:4], "fwd_log10_growth", "bwd_log10_growth"]
    section.figures.append(
        cached_figure(
            data,
            f"growth-depth-{first['width']}-{first['batch']}",
            [deep[columns], acts, inits, kinds],
            lambda: figures_growth.growth_vs_depth(deep, acts, inits, kinds),
            DEPTH_ALT,
            DEPTH_CAPTION.format(shape_family=shape, sat=figures.SATURATE),
            fold=DEPTH_FOLD.format(shape=shape) if fold else "",
        )
    )
