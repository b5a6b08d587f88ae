"""10. History: every run in the store, efficiency and stability verdicts across runs."""

import pandas as pd

from stability.report import figures
from stability.report.inputs import ReportData
from stability.report.sections.figure_cache import cached_figure
from stability.report.sections.page import Section, Table
from stability.results.tables import summary_table

TITLE = "10. History"
INTRO = (
    "Every run in the store: benchmark efficiency (median per group) and, per sweep run, "
    "the share of its configurations that stay stable, explode, vanish or go non-finite."
)
NO_RUNS = "The store holds no runs yet."
NO_RESULTS = "No benchmark or sweep results across runs yet."
ALT = (
    "Median efficiency per benchmark group across benchmark runs, and the share "
    "of stable, exploding, vanishing and non-finite configurations per sweep run."
)
CAPTION = (
    "A drop in efficiency between runs on the same machine is a throughput "
    "regression. Sweep runs resume, so each covers the cells it computed; a "
    "change in the shares for the same cells means the numerics changed."
)
ONE_RUN = "Only one benchmark run so far: history starts here."
RUNS = "Runs in the store"
SHARES = "Share of configurations per verdict, per sweep run"


def history(data: ReportData) -> Section:
    section = Section("history", TITLE, INTRO)
    if data.runs.empty:
        section.status = "not run"
        section.notes.append(NO_RUNS)
        return section
    efficiency = None
    bench = data.bench
    if not bench.empty and "efficiency" in bench.columns:
        groups = [c for c in ["kind", "shape", "dtype", "probe"] if c in bench.columns]
        labelled = bench.assign(group=bench[groups].astype(str).agg(" / ".join, axis=1))
        efficiency = labelled.pivot_table(
            index="run_id", columns="group", values="efficiency", aggfunc="median"
        )
        if efficiency.shape[1] > 8:  # keep the legend readable: the busiest groups
            top = labelled["group"].value_counts().index[:8]
            efficiency = efficiency[[c for c in efficiency.columns if c in set(top)]]
    stability = _verdicts_by_run(data.sweep_history)
    if (efficiency is None or efficiency.empty) and (stability is None or stability.empty):
        section.status = "partial"
        section.notes.append(NO_RESULTS)
    else:
        eff, stab = efficiency, stability
        section.figures.append(
            cached_figure(
                data,
                "history",
                [eff if eff is not None else "-", stab if stab is not None else "-"],
                lambda: figures.history(eff, stab),
                ALT,
                CAPTION,
            )
        )
        if efficiency is not None and len(efficiency) < 2:
            section.notes.append(ONE_RUN)
    runs = data.runs.copy()
    if not data.sweep_history.empty:
        cells = data.sweep_history.groupby("run_id")["cell_key"].nunique().rename("sweep cells")
        runs = runs.merge(cells, how="left", left_on="id", right_index=True)
    if not bench.empty:
        counts = bench.groupby("run_id").size().rename("bench results")
        runs = runs.merge(counts, how="left", left_on="id", right_index=True)
    section.tables.append(Table("runs", RUNS, runs.sort_values("id", ascending=False)))
    if stability is not None and not stability.empty:
        section.tables.append(Table("stability-history", SHARES, stability.reset_index()))
    return section


def _verdicts_by_run(rows: pd.DataFrame) -> pd.DataFrame | None:
    if rows.empty:
        return None
    out = {}
    for run_id, g in rows.groupby("run_id"):
        table = summary_table(g.drop(columns=["run_id"]))
        if table.empty:
            continue
        out[run_id] = table["verdict"].value_counts(normalize=True)
    if not out:
        return None
    frame = pd.DataFrame(out).T.fillna(0.0).sort_index()
    frame.index.name = "run_id"
    frame.columns.name = None
    order = [c for c in ("stable", "explodes", "vanishes", "non-finite") if c in frame.columns]
    return frame[order]
