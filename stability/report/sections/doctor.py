"""9. Divergence doctor: where NaN and inf come from, and the learning-rate map.

The rows are the doctor's tables in the store (``doctor_rows``): the report's own default
cases (``doctor_cases``) and whatever ``stability doctor`` wrote.
"""

import math
from typing import cast

import numpy as np
import pandas as pd

from stability.report.doctor_cases import MARKER
from stability.report.inputs import ReportData
from stability.report.sections.figure_cache import cached_figure
from stability.report.sections.page import Section, Table
from stability.train.lr_search import lr_map_figure

TITLE = "9. Divergence doctor"
INTRO = (
    "Where NaN and inf come from and what fixes them (the notes: too large a learning rate "
    "or initial weights give inf, an invalid operation such as 0/0 or inf − inf gives NaN; "
    "lower the learning rate and the init variance until it trains). `stability doctor` "
    "trains briefly, watching every layer, and at the first non-finite value names the "
    "step, the layer, forward or backward, and the operator that made it."
)
NO_MAP = "No learning-rate map in the store: `stability doctor --lr-map`."
NO_DIAGNOSIS = "No diagnosis in the store: `stability doctor`."
MAP_SOURCE = (
    "Learning-rate map from run {run_id} ({command}): depth {depth}, width {width}, {dtype}, "
    "{optimizer}, {data} data, {steps} steps per trial."
)
MAP_ALT = (
    "Stable or divergent training for each learning rate (log axis) and init (rows), "
    "one panel per activation ({activations}): green squares stable, red crosses divergent."
)
MAP_CAPTION = (
    "Green: {steps} steps of training ended with the loss below its start; red: a "
    "non-finite value or a loss that ended higher. Read each row left to right: its "
    "last green square is the largest stable learning rate on this grid. A row without "
    "a green square fails at every rate: there the initialisation is the problem, not "
    "the learning rate."
)
MAP_TABLE = "Stable (ok) or divergent (DIV) per learning rate"
MAP_TRIALS = "Every trial of the map"
NEVER_STABLE = "Never stable on this grid: {configs}."
DIAGNOSES_SOURCE = "Diagnoses from run {run_id} ({command})"
DEFAULT_CASES = ": the report's default cases, one stable, one overflow, one NaN."
CARD = "What the doctor found, one column per run"
LAYERS = "Last finite statistics per layer of the runs that diverged (max |x|)"
OTHERS = "Other diagnoses in the store, newest first"

DOCTOR_FIELDS = (
    ("shows", "shows"),
    ("config", "config"),
    ("status", "status"),
    ("step", "first non-finite at step"),
    ("where", "where"),
    ("phase", "phase"),
    ("kind", "kind"),
    ("mechanism", "mechanism"),
    ("op", "operator"),
    ("detail", "detail"),
    ("first_inf", "first inf"),
    ("first_nan", "first NaN"),
    ("grew_geometrically", "loss grew geometrically before"),
    ("losses", "loss, first → last"),
    ("advice", "advice"),
)
NO_DOCTOR = (
    "The store holds no doctor results: run `stability report` without --no-run (about 5 s "
    "for the default cases), or `stability doctor --lr-map`."
)


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _text(v: object) -> str:
    if _missing(v):
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _loss(v: object) -> str:
    """A loss that is NaN is a finding, not a missing value."""
    return f"{float(cast(float, v)):.4g}" if isinstance(v, int | float) else _text(v)


def _doctor_config(row: pd.Series) -> str:
    return (
        f"{row['activation']}/{row['init']}, depth {row['depth']}, width {row['width']}, "
        f"{row['dtype']}; {row['optimizer']} lr {float(row['lr']):g}, {row['steps']} steps, "
        f"{row['data']} data, batch {row['batch']}"
    )


def _diagnosis_card(rows: pd.DataFrame) -> pd.DataFrame:
    """One column per diagnosed run, one row per finding: three runs read side by side."""
    columns: dict[str, list[str]] = {"finding": [label for _, label in DOCTOR_FIELDS]}
    for i, (_, row) in enumerate(rows.iterrows()):
        values = {
            **{k: row.get(k) for k, _ in DOCTOR_FIELDS},
            "config": _doctor_config(row),
            "losses": f"{_loss(row.get('initial_loss'))} → {_loss(row.get('last_loss'))}",
        }
        name = row.get("case")
        columns[str(name) if not _missing(name) else f"run {row['run_id']} #{i + 1}"] = [
            _text(values.get(k)) for k, _ in DOCTOR_FIELDS
        ]
    return pd.DataFrame(columns)


def _run_command(data: ReportData, run_id: int) -> str:
    if data.runs.empty:
        return "unknown command"
    match = data.runs[data.runs["id"] == run_id]
    return str(match["command"].iloc[0]) if not match.empty else "unknown command"


def _report_runs(data: ReportData) -> set[int]:
    if data.runs.empty:
        return set()
    own = data.runs[data.runs["command"].astype(str).str.contains(MARKER, regex=False)]
    return {int(i) for i in own["id"]}


def doctor(data: ReportData) -> Section:
    section = Section("doctor", TITLE, INTRO)
    diag = data.doctor.get("diagnosis", pd.DataFrame())
    layers = data.doctor.get("layers", pd.DataFrame())
    lrs = data.doctor.get("lr_map", pd.DataFrame())
    if diag.empty and lrs.empty:
        section.status = "not run"
        section.notes.append(NO_DOCTOR)
        return section
    verdicts = []
    if lrs.empty:
        section.status = "partial"
        section.notes.append(NO_MAP)
    else:
        verdicts.append(_lr_map(data, section, lrs))
    if diag.empty:
        section.status = "partial"
        section.notes.append(NO_DIAGNOSIS)
    else:
        verdicts.append(_diagnoses(data, section, diag, layers))
    section.verdict = "; ".join(verdicts)
    section.judge("pass", section.verdict)  # diverging is what the default cases demonstrate
    return section


def _lr_map(data: ReportData, section: Section, lrs: pd.DataFrame) -> str:
    run_id = int(lrs["run_id"].max())
    table = lrs[lrs["run_id"] == run_id].assign(stable=lambda t: t["stable"].astype(bool))
    # trial_steps counts the steps a trial ran (a divergent one stops early): show the budget.
    budget = table["steps"] if "steps" in table.columns else table["trial_steps"]
    steps = ", ".join(str(s) for s in sorted(set(budget)))
    first = table.iloc[0]
    section.notes.append(
        MAP_SOURCE.format(
            run_id=run_id,
            command=_run_command(data, run_id),
            depth=first["depth"],
            width=first["width"],
            dtype=first["dtype"],
            optimizer=first["optimizer"],
            data=first["data"],
            steps=steps,
        )
    )
    acts = list(dict.fromkeys(str(a) for a in table["activation"]))
    cols = ["activation", "init", "lr", "stable"]
    section.figures.append(
        cached_figure(
            data,
            "lr-map",
            [table[cols].reset_index(drop=True)],
            lambda: lr_map_figure(table),
            MAP_ALT.format(activations=", ".join(acts)),
            MAP_CAPTION.format(steps=steps),
        )
    )
    cells = table.assign(cell=np.where(table["stable"], "ok", "DIV"))
    grid = cells.pivot_table(
        index=["activation", "init"], columns="lr", values="cell", aggfunc="first", sort=False
    )
    grid.columns = [f"lr {float(c):.3g}" for c in grid.columns]
    edge = table[table["stable"]].groupby(["activation", "init"], sort=False)["lr"].max()
    grid["largest stable lr tried"] = edge.reindex(grid.index)
    section.tables.append(Table("lr-map", MAP_TABLE, grid.reset_index()))
    section.tables.append(Table("lr-map-trials", MAP_TRIALS, table, show=False))
    trains = int(edge.notna().sum())
    never = [f"{a}/{i}" for a, i in grid.index[grid["largest stable lr tried"].isna()]]
    if never:
        section.notes.append(NEVER_STABLE.format(configs=", ".join(never)))
    return f"lr map: {trains} of {len(grid)} configs train at some lr"


def _diagnoses(data: ReportData, section: Section, diag: pd.DataFrame, layers: pd.DataFrame) -> str:
    own = _report_runs(data) & {int(i) for i in diag["run_id"]}
    shown_run = max(own) if own else int(diag["run_id"].max())
    shown = diag[diag["run_id"] == shown_run]
    section.notes.append(
        DIAGNOSES_SOURCE.format(run_id=shown_run, command=_run_command(data, shown_run))
        + (DEFAULT_CASES if own else ".")
    )
    section.tables.append(Table("doctor", CARD, _diagnosis_card(shown), wrap=True))
    if not layers.empty and "case" in layers.columns:
        failed = shown[shown["status"] != "stable"]["case"].astype(str).tolist()
        per_layer = layers[(layers["run_id"] == shown_run) & layers["case"].isin(failed)]
        stats = ("act_max_abs", "grad_max_abs", "weight_grad_max_abs", "weight_max_abs")
        keep = [c for c in ("case", "layer", "where", *stats) if c in per_layer.columns]
        if not per_layer.empty:
            section.tables.append(Table("doctor-layers", LAYERS, per_layer[keep]))
    others = diag[diag["run_id"] != shown_run].sort_values("run_id", ascending=False)
    if not others.empty:
        brief = others.assign(config=others.apply(_doctor_config, axis=1))
        keep = [c for c in ("run_id", "config", "status", "step", "where", "phase", "kind",
                            "mechanism") if c in brief.columns]  # fmt: skip
        section.tables.append(Table("doctor-other", OTHERS, brief[keep], max_rows=20))
    counts = shown["status"].value_counts()
    return f"{len(shown)} runs diagnosed: " + ", ".join(f"{n} {k}" for k, n in counts.items())
