"""What the report is drawn from: store contents, property results, runner steps.

The runner (``runner.py``) produces results, this module gathers whatever exists into one
``ReportData`` so every section can say plainly what is missing instead of failing. The
sections compute nothing: the gate's verdict comes from the runner (or its cache), the
notes' curves from ``stability.notes.curves``, the machine's facts from here.
"""

import datetime as dt
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from stability.measure import baseline as bl
from stability.measure.gate import Row
from stability.notes import curves
from stability.results.environment import environment
from stability.results.store import Store

CACHE_DIR = "report-cache"  # beside the store: cached subprocess results and figures
StepStatus = Literal["ran", "reused", "failed", "skipped", "not run"]


@dataclass(frozen=True)
class Step:
    """One thing the runner did (or did not do) before rendering."""

    name: str
    status: StepStatus
    detail: str
    seconds: float = 0.0


@dataclass(frozen=True)
class PropertyRun:
    """A property-suite result on disk: junit XML, pytest output, and how current it is."""

    junit: Path
    log: Path | None
    source: str  # a sentence: where the result came from
    current: bool | None  # same code+environment fingerprint as now; None when unknown
    exit_code: int | None = None
    finished: str | None = None


@dataclass(frozen=True)
class BaselineFile:
    """The committed baseline the gate judges against, or why there is none to use."""

    path: Path
    doc: dict[str, Any] | None  # None: missing or unusable, see ``error``
    error: str | None = None
    missing: bool = False
    facts: dict[str, str] = field(default_factory=dict)  # who, when, why, what it holds


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict as the runner judged it (or found it cached): rows, not a recipe."""

    rows: list[Row]  # defaults and figures, then the throughput row when there is one
    code: int  # the exit code all ``rows`` add up to
    figures_code: int  # the figures' own: CANNOT_JUDGE when the baseline could not be read
    notes: list[str]  # why, for a reader (e.g. a baseline from another machine)
    throughput: dict[str, Any] | None  # the runner's throughput entry: row, rounds, when


@dataclass(frozen=True)
class NotesCurves:
    """The course notes' curves, from ``stability.notes.curves``."""

    losses: dict[str, pd.DataFrame]
    taylor: dict[str, pd.DataFrame]
    sigmoid: pd.DataFrame
    matrix_products: pd.DataFrame
    dropout: pd.DataFrame


@dataclass
class ReportData:
    """Everything the sections read; any part may be empty."""

    db: Path
    root: Path  # project root: properties/ and benchmarks/ live here
    sweep: pd.DataFrame
    sweep_history: pd.DataFrame  # run_id + the same columns, every run's rows
    runs: pd.DataFrame
    bench: pd.DataFrame  # normalised by ``normalise_bench``
    properties: PropertyRun | None
    steps: list[Step] = field(default_factory=list)
    generated: str = ""
    commit: str | None = None
    quick: bool = False
    cache_dir: Path | None = None  # where drawn figures are cached; None: draw every time
    doctor: dict[str, pd.DataFrame] = field(default_factory=dict)  # kind -> doctor_rows
    environment: dict[str, str] = field(default_factory=dict)  # ``environment_facts()``
    baseline: BaselineFile | None = None
    gate: GateResult | None = None  # None: not judged for this code and baseline
    notes: NotesCurves | None = None
    run_cells: pd.DataFrame = field(default_factory=pd.DataFrame)  # run_id, cell_key, status
    judged: pd.DataFrame | None = None  # ``judged_table(sweep)``, filled on first use
    records: dict[str, pd.DataFrame] = field(default_factory=dict)  # name -> ``Store.records``

    def latest(self, name: str) -> pd.DataFrame:
        """The rows of ``name`` from its most recent run (empty when none was stored)."""
        frame = self.records.get(name, pd.DataFrame())
        if frame.empty:
            return frame
        newest = frame["run_id"].max()
        rows: pd.DataFrame = frame[frame["run_id"] == newest].reset_index(drop=True)
        return rows


DOCTOR_KINDS = ("diagnosis", "layers", "lr_map")


def gather(
    db: Path,
    root: Path,
    properties: PropertyRun | None,
    steps: list[Step] | None = None,
    quick: bool = False,
    gate: GateResult | None = None,
) -> ReportData:
    """Read the store (creating nothing if it is absent), the baseline and the machine's
    facts into a ``ReportData``; the notes' curves are computed here (about 0.1 s)."""
    empty = pd.DataFrame()
    sweep, history, runs, bench, run_cells = empty, empty, empty, empty, empty
    doctor: dict[str, pd.DataFrame] = {}
    records: dict[str, pd.DataFrame] = {}
    if db.exists():
        with Store.open(db, readonly=True) as store:  # drawing never writes the store
            sweep = store.sweep_rows()
            runs = store.runs()
            bench = normalise_bench(store.bench_results())
            history = store.sweep_history()
            doctor = {kind: store.doctor_rows(kind) for kind in DOCTOR_KINDS}
            run_cells = store.run_cells()
            records = {name: store.records(name) for name in store.record_names()}
    return ReportData(
        db=db,
        root=root,
        sweep=sweep,
        sweep_history=history,
        runs=runs,
        bench=bench,
        properties=properties,
        steps=list(steps or []),
        generated=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        commit=environment(("git_commit",), cwd=root)["git_commit"],
        quick=quick,
        cache_dir=db.parent / CACHE_DIR,
        doctor=doctor,
        environment=environment_facts(),
        baseline=load_baseline(root / bl.DEFAULT_PATH),
        gate=gate,
        notes=notes_curves(),
        run_cells=run_cells,
        records=records,
    )


def load_baseline(path: Path) -> BaselineFile:
    """The baseline at ``path``, or the reason the gate cannot judge against it."""
    try:
        doc = bl.load(path)
    except bl.CannotJudge as exc:
        return BaselineFile(path, None, str(exc), missing=not path.exists())
    return BaselineFile(path, doc, facts=_baseline_facts(path, doc))


def _baseline_facts(path: Path, base: dict[str, Any]) -> dict[str, str]:
    created = base.get("created") or {}
    stab: dict[str, dict[str, Any]] = base["stability"]
    eff = [float(v) for v in base["throughput"].get("efficiency") or []]
    dtypes = sorted({str(c.get("dtype")) for c in stab.values()})
    facts = {
        "file": str(path),
        "written by": created.get("by"),
        "written at (UTC)": created.get("at"),
        "why": created.get("why"),
        "at commit": created.get("commit"),
        "stability grid": f"{len(stab)} cells ({', '.join(dtypes)}), per-layer "
        f"{', '.join(bl.FIGURES)}",
        "train-step efficiency": (
            f"median {float(np.median(eff)):.3g} over {len(eff)} rounds "
            f"(range {min(eff):.3g} to {max(eff):.3g})"
            if eff
            else "no samples"
        ),
    }
    return {k: str(v) for k, v in facts.items()}


@functools.cache
def notes_curves() -> NotesCurves:
    """Every curve the notes section draws: pure and seeded, so computed once per process
    (about 1 s, mostly the dropout moments); sections treat them as read-only."""
    return NotesCurves(
        losses=curves.loss_curves(),
        taylor=curves.taylor_curves(),
        sigmoid=curves.sigmoid_gradient(),
        matrix_products=curves.matrix_products(),
        dropout=curves.dropout_moments(),
    )


def _first(frame: pd.DataFrame, *names: str) -> pd.Series | None:
    for name in names:
        if name in frame.columns:
            return frame[name].astype(float)
    return None


def normalise_bench(raw: pd.DataFrame) -> pd.DataFrame:
    """Benchmark rows with the columns the throughput plots need, whatever the ingest wrote.

    Rows from ``stability.measure.bench.bench_rows`` carry extra_info flat and stats as ``stats_*``;
    nested ``stats``/``extra_info`` dicts are flattened too. IQR bars come from the per-call
    quartiles: pytest-benchmark's quartiles (scaled to per-call by ``median_s / stats_median``)
    or, without them, ``median_s +- iqr_s / 2``.
    """
    if raw.empty:
        return raw
    frame = raw.copy()
    for nested in ("extra_info", "stats"):
        if nested in frame.columns:
            expanded = pd.json_normalize(
                frame[nested].apply(lambda d: d if isinstance(d, dict) else {})
            )
            prefix = "stats_" if nested == "stats" else ""
            expanded.columns = [f"{prefix}{c}" for c in expanded.columns]
            frame = pd.concat(
                [frame.drop(columns=[nested]).reset_index(drop=True), expanded], axis=1
            )
            frame = frame.loc[:, ~frame.columns.duplicated()]
    if "batch_size" not in frame.columns or "samples_per_s" not in frame.columns:
        return frame
    frame = frame[frame["batch_size"].notna() & frame["samples_per_s"].notna()].copy()
    batch = frame["batch_size"].astype(float)
    speed = frame["samples_per_s"].astype(float)
    median_s = _first(frame, "median_s")
    if median_s is None:
        median_s = batch / speed
    q1, q3, stats_median = (_first(frame, f"stats_{k}") for k in ("q1", "q3", "median"))
    if q1 is not None and q3 is not None and stats_median is not None:
        scale = median_s / stats_median
        per_call_q1, per_call_q3 = q1 * scale, q3 * scale
    else:
        iqr = _first(frame, "iqr_s")
        half = (iqr if iqr is not None else pd.Series(0.0, index=frame.index)) / 2
        per_call_q1, per_call_q3 = median_s - half, median_s + half
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["samples_per_s_q1"] = batch / per_call_q3  # slower quartile: fewer samples/s
        frame["samples_per_s_q3"] = batch / per_call_q1
    # A benchmark without a kind (e.g. the sweep's cells/s) is named after its test.
    base = frame["name"].astype(str).str.split("[").str[0].str.removeprefix("test_")
    frame["kind"] = frame["kind"].fillna(base) if "kind" in frame.columns else base
    for column, default in (
        ("device", "cpu"),
        ("dtype", "float32"),
        ("precision_mode", "native"),
    ):
        if column not in frame.columns:
            frame[column] = default
        frame[column] = frame[column].fillna(default).astype(str)
    if "probe_every" not in frame.columns:
        frame["probe_every"] = np.nan
    frame["probe"] = [
        "no probe" if pd.isna(p) or not p else f"probe every {int(p)}" for p in frame["probe_every"]
    ]
    depth = frame["depth"] if "depth" in frame.columns else pd.Series(np.nan, index=frame.index)
    width = frame["width"] if "width" in frame.columns else pd.Series(np.nan, index=frame.index)
    frame["shape"] = [
        f"{_int(d)}x{_int(w)}" if pd.notna(d) and pd.notna(w) else "mixed"
        for d, w in zip(depth, width, strict=True)
    ]
    return frame.reset_index(drop=True)


def _int(v: Any) -> str:
    try:
        return str(int(v))
    except (TypeError, ValueError):
        return str(v)


def environment_facts() -> dict[str, str]:
    """Where this report was rendered: torch, devices, threads, host."""
    facts = ("torch", "python", "cpu_model", "cpu_count", "torch_threads", "cuda_devices")
    env = environment((*facts, "platform"))  # not git_commit: gather() reads it for its root
    return {
        "torch version": env["torch"],
        "python": env["python"],
        "CPU": env["cpu_model"],
        "CPU cores (os.cpu_count)": str(env["cpu_count"]),
        "torch threads": str(env["torch_threads"]),
        "GPU": ", ".join(env["cuda_devices"]) or "none (CUDA not available)",
        "platform": env["platform"],
    }
