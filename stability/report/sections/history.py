"""10. History: every run in the store; efficiency and verdicts across runs, like with like.

Sweep runs are compared only with runs of the same grid (``results.compare.run_grids``
names a grid by the cells a run completed): a trend between the 84-config default sweep
and a 5-config bfloat16 grid would be a change of grid, not of numerics. ``stability diff
RUN_A RUN_B`` says which figures moved between two runs.
"""

import pandas as pd

from stability.report import figures_runs
from stability.report.inputs import ReportData
from stability.report.sections.figure_cache import cached_figure
from stability.report.sections.page import Section, Table
from stability.results.compare import run_grids
from stability.results.tables import summary_table
from stability.results.verdict_words import VERDICTS

TITLE = "10. History"
INTRO = (
    "Every run in the store: benchmark efficiency (median per group) and, for each sweep grid "
    "run more than once, the share of its configurations that stay stable, explode, vanish "
    "or go non-finite. Only runs of the same grid (the same cells) are compared. "
    "`stability diff RUN_A RUN_B` lists which figures moved between two runs."
)
NO_RUNS = "The store holds no runs yet."
NO_RESULTS = "No benchmark run and no sweep grid run twice: nothing to draw across runs yet."
ALT = (
    "Median efficiency per benchmark group across benchmark runs, and for each sweep grid "
    "run more than once the share of stable, exploding, vanishing and non-finite configs."
)
CAPTION = (
    "A drop in efficiency between runs on the same machine is a throughput regression. "
    "Each sweep panel holds the runs of one grid only; a change in its shares means the "
    "numerics changed (see `stability diff` for which figures moved)."
)
ONE_RUN = "Only one benchmark run so far: history starts here."
GRIDS = (
    "{runs} sweep runs over {grids} distinct grids (a grid: the exact cells a run completed; "
    "runs that resumed cover fewer cells and form their own grid)."
)
SINGLE = "Run once, nothing to compare yet: {grids}."
MORE = "Drawn: the {k} grids with the most runs; the others are in the tables below."
RUNS = "Runs in the store, newest first (ids for `stability diff`)"
SHARES = "Share of configurations per verdict, per sweep run, with its grid"
CHANGED = "grid {grid}: verdict shares changed between runs {a} and {b}"
STEADY = "{runs} runs; no verdict share changed between runs of the same grid"
NOTHING_TWICE = "{runs} runs; no sweep grid has run twice, nothing to compare"
MAX_GRIDS = 3


def _grid_label(grid: str, rows: pd.DataFrame, cells: int) -> str:
    dtypes = "/".join(dict.fromkeys(str(d) for d in rows["dtype"]))
    depths = ", ".join(str(d) for d in sorted(rows["depth"].unique()))
    return f"grid {grid}: {cells} cells, {dtypes}, depth {depths}"


def history(data: ReportData) -> Section:
    section = Section("history", TITLE, INTRO)
    if data.runs.empty:
        section.status = "not run"
        section.notes.append(NO_RUNS)
        return section
    efficiency = _efficiency(data.bench)
    shares = _verdicts_by_run(data.sweep_history)
    grids = run_grids(data.run_cells)
    drawn: list[tuple[str, pd.DataFrame]] = []
    changes: list[str] = []
    if shares is not None and not grids.empty:
        shares = shares.join(grids.set_index("run_id"), how="left")
        by_grid = shares.groupby("grid", sort=False)
        section.notes.append(GRIDS.format(runs=len(shares), grids=by_grid.ngroups))
        repeated = sorted(
            (g for _, g in by_grid if len(g) > 1), key=lambda g: (-len(g), -g.index.max())
        )
        singles = [
            _grid_label(str(g["grid"].iloc[0]), _rows_of(data, g.index), int(g["cells"].iloc[0]))
            for _, g in by_grid if len(g) == 1
        ]  # fmt: skip
        if singles:
            section.notes.append(SINGLE.format(grids="; ".join(singles)))
        for g in repeated:
            grid = str(g["grid"].iloc[0])
            verdicts = g[[v for v in VERDICTS if v in g.columns]]
            if len(drawn) < MAX_GRIDS:
                label = _grid_label(grid, _rows_of(data, g.index), int(g["cells"].iloc[0]))
                drawn.append((label, verdicts))
            moved = (verdicts.diff().abs().max(axis=1) > 1e-9).tolist()
            ids = verdicts.index.tolist()
            changes += [
                CHANGED.format(grid=grid, a=ids[i - 1], b=ids[i])
                for i in range(1, len(ids))
                if moved[i]
            ]
        if len(repeated) > MAX_GRIDS:
            section.notes.append(MORE.format(k=MAX_GRIDS))
    if (efficiency is None or efficiency.empty) and not drawn:
        section.notes.append(NO_RESULTS)
    else:
        section.figures.append(
            cached_figure(
                data,
                "history",
                [
                    efficiency if efficiency is not None else "-",
                    *[f for _, f in drawn],
                    [label for label, _ in drawn],
                ],
                lambda: figures_runs.history(efficiency, drawn),
                ALT,
                CAPTION,
            )
        )
        if efficiency is not None and len(efficiency) < 2:
            section.notes.append(ONE_RUN)
    if changes:
        section.judge("warn", "; ".join(changes[:3]))
    elif drawn:
        section.judge("pass", STEADY.format(runs=len(data.runs)))
    else:
        section.judge("pass", NOTHING_TWICE.format(runs=len(data.runs)))
    section.tables.append(Table("runs", RUNS, _runs(data, grids)))
    if shares is not None and not shares.empty:
        section.tables.append(Table("stability-history", SHARES, shares.reset_index()))
    return section


def _rows_of(data: ReportData, run_ids: pd.Index) -> pd.DataFrame:
    history = data.sweep_history
    return history[history["run_id"].isin(list(run_ids))]


def _efficiency(bench: pd.DataFrame) -> pd.DataFrame | None:
    if bench.empty or "efficiency" not in bench.columns:
        return None
    groups = [c for c in ["kind", "shape", "dtype", "probe"] if c in bench.columns]
    labelled = bench.assign(group=bench[groups].astype(str).agg(" / ".join, axis=1))
    efficiency = labelled.pivot_table(
        index="run_id", columns="group", values="efficiency", aggfunc="median"
    )
    if efficiency.shape[1] > 8:  # keep the legend readable: the busiest groups
        top = labelled["group"].value_counts().index[:8]
        efficiency = efficiency[[c for c in efficiency.columns if c in set(top)]]
    return efficiency


def _runs(data: ReportData, grids: pd.DataFrame) -> pd.DataFrame:
    runs = data.runs.copy()
    if not data.sweep_history.empty:
        cells = data.sweep_history.groupby("run_id")["cell_key"].nunique().rename("sweep cells")
        runs = runs.merge(cells, how="left", left_on="id", right_index=True)
    if not grids.empty:
        runs = runs.merge(grids[["run_id", "grid"]], how="left", left_on="id", right_on="run_id")
        runs = runs.drop(columns=["run_id"])
    if not data.bench.empty:
        counts = data.bench.groupby("run_id").size().rename("bench results")
        runs = runs.merge(counts, how="left", left_on="id", right_index=True)
    return runs.sort_values("id", ascending=False)


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
    order = [c for c in VERDICTS if c in frame.columns]
    return frame[order]
