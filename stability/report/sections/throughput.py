"""7. Throughput: samples per second and efficiency of the latest benchmark run."""

import pandas as pd

from stability.report import figures_runs
from stability.report.inputs import ReportData
from stability.report.sections.figure_cache import cached_figure
from stability.report.sections.page import Section, Table

TITLE = "7. Throughput"
INTRO = (
    "Training (or inference) steps of the probe MLP: samples per second against batch "
    "size, and efficiency = achieved GFLOP/s over the GFLOP/s of the same GEMM timed in "
    "the same process, which is what stays comparable on a noisy shared machine."
)
NOT_RUN = (
    "No benchmark results in the store: run `stability report` without --no-run, or "
    "`nox -s bench` and ingest its JSON."
)
ALT = (
    "Left: samples per second against batch size on log-log axes with interquartile "
    "bars. Right: efficiency against batch size."
)
CAPTION = (
    "Throughput should rise with batch size until the matmuls saturate the cores, then "
    "flatten; efficiency near 1 means the step runs as fast as its bare GEMM. Wide "
    "bars mean a noisy machine: compare efficiencies, not raw speeds."
)
TABLE = "Latest benchmark results"
SWEEP_CELLS = (
    "Sweep throughput (not in the plot: its unit is probe cells, not training samples): "
    "{rates} in benchmark run {run_id}; every figure in the table."
)
ONLY_SWEEP = "The latest benchmark run timed only sweep cells: no training steps to plot."
HEALTHY = "benchmark run {run_id}: {n} results, median efficiency {eff}"
NO_OVERHEAD = "Probe overhead: not available (no benchmark with a probe attached)."
OVERHEAD = "Probe overhead: step time with the probe over without"
UNSTABLE = (
    "Unstable (relative IQR >= 5 % at batch >= 64; too noisy to compare between runs): "
    "{n} results: {names}."
)
GROUP_COLUMNS = ["kind", "shape", "dtype", "device", "precision_mode", "probe"]


def _latest_bench(data: ReportData) -> pd.DataFrame:
    bench = data.bench
    if bench.empty or "samples_per_s" not in bench.columns:
        return pd.DataFrame()
    latest: pd.DataFrame = bench[bench["run_id"] == bench["run_id"].max()]
    return latest


def throughput(data: ReportData) -> Section:
    section = Section("throughput", TITLE, INTRO)
    bench = _latest_bench(data)
    if bench.empty:
        section.status = "not run"
        section.notes.append(NOT_RUN)
        return section
    run_id = int(bench["run_id"].iloc[0])
    section.notes.append(f"Benchmark run {run_id}; {len(bench)} results.")
    cells = bench["cells_per_s"].notna() if "cells_per_s" in bench.columns else None
    steps = bench[~cells] if cells is not None else bench
    if cells is not None and cells.any():
        rates = ", ".join(
            f"{r['name']}: {float(r['cells_per_s']):.3g} cells/s"
            for _, r in bench[cells].iterrows()
        )
        section.notes.append(SWEEP_CELLS.format(rates=rates, run_id=run_id))
    groups = [c for c in GROUP_COLUMNS if c in steps.columns and steps[c].nunique() > 1] or [
        "shape"
    ]
    if steps.empty:
        section.notes.append(ONLY_SWEEP)
    else:
        section.figures.append(
            cached_figure(
                data,
                "throughput",
                [steps.drop(columns=["run_id"]).select_dtypes(include="number"), groups],
                lambda: figures_runs.throughput(steps, groups),
                ALT,
                CAPTION,
            )
        )
    eff = bench["efficiency"].median() if "efficiency" in bench.columns else float("nan")
    section.judge("pass", HEALTHY.format(run_id=run_id, n=len(bench),
                  eff="not recorded" if pd.isna(eff) else f"{eff:.3g}"))  # fmt: skip
    columns = [
        c for c in [*GROUP_COLUMNS, "name", "batch_size", "samples_per_s", "samples_per_s_q1",
                    "samples_per_s_q3", "gflops", "calib_gflops", "efficiency", "rel_iqr",
                    "unstable", "threads", "torch_version"]
        if c in bench.columns
    ]  # fmt: skip
    section.tables.append(Table("throughput", TABLE, bench[columns]))
    if "unstable" in bench.columns and bench["unstable"].fillna(False).astype(bool).any():
        shaky = bench[bench["unstable"].fillna(False).astype(bool)]
        section.notes.append(
            UNSTABLE.format(n=len(shaky), names=", ".join(map(str, shaky["name"])))
        )
    overhead = _probe_overhead(bench)
    if overhead.empty:
        section.notes.append(NO_OVERHEAD)
    else:
        section.tables.append(Table("probe-overhead", OVERHEAD, overhead))
    return section


def _probe_overhead(bench: pd.DataFrame) -> pd.DataFrame:
    direct = [c for c in ("overhead_ratio", "probe_overhead", "overhead") if c in bench.columns]
    if direct:
        extra = [c for c in bench.columns if str(c).startswith("overhead") and c not in direct]
        keep = [c for c in ["name", "shape", "probe", "batch_size", *direct, *extra] if c in bench]
        return bench[bench[direct[0]].notna()][keep].reset_index(drop=True)
    if "probe" not in bench.columns or bench["probe"].nunique() < 2:
        return pd.DataFrame()
    keys = [c for c in ["kind", "shape", "dtype", "device", "batch_size"] if c in bench.columns]
    base = bench[bench["probe"] == "no probe"].groupby(keys)["samples_per_s"].median()
    out = []
    for (probe, *_), g in bench[bench["probe"] != "no probe"].groupby(["probe", *keys]):
        for _, row in g.iterrows():
            key = tuple(row[k] for k in keys)
            if key in base.index:
                out.append({
                    "probe": probe, **{k: row[k] for k in keys},
                    "slowdown (time with / without)": base[key] / row["samples_per_s"],
                })  # fmt: skip
    return pd.DataFrame(out)
