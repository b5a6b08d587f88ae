"""MLPs in fp8 / MX formats: the newest ``stability sweep --dtype <format>``, network by format.

The rows are the store's ``sweep_formats`` records (every Linear's input, weight, output and
gradient in each format, per network of the grid) and ``sweep_formats_advice`` (per layer,
the cheapest format asked that keeps the target), both written by ``stability sweep``
(``cli/sweep_formats.py``); each network's newest run is shown. Nothing is computed here but
the per-network minima and counts.
"""

import pandas as pd

from stability.report.figures_lowp import sqnr_by_layer
from stability.report.inputs import ReportData
from stability.report.sections.figure_cache import cached_figure
from stability.report.sections.page import Section, Table
from stability.usermodel.lowp_advice import KEEP

TITLE = "17. The sweep's MLPs in fp8 / MX formats"
INTRO = (
    "Each network of the sweep's grid run once in float32 with every Linear's input, "
    "weight, output and gradient stored in each low-precision format asked and read back "
    "(emulated). Per network and format: the worst layer's output and gradient SQNR, the "
    "largest share of values that overflowed or were flushed to zero, and how many layers "
    "the advice puts in each format (the cheapest that keeps the target with nothing "
    "overflowing; otherwise the layer keeps bf16). Depth and initialisation decide where "
    "the scale drifts out of a format's range: a vanishing network flushes its deep "
    "gradients, an exploding one overflows."
)
NOT_RUN = (
    "No low-precision sweep in the store: run `stability sweep --dtype "
    "float32,float8_e4m3fn,mxfp4_e2m1` (any format of `stability probe --formats`), then "
    "the report again (`--no-run` draws it from the store alone)."
)
ALT = "Output and gradient SQNR in dB against layer, one panel per {cases} format and recipe."
CAPTION = (
    "One line per network (activation/init); the dashed line is the target. A line that "
    "falls with depth is a scale drifting out of the format's range: flushed values "
    "(vanishing) or saturated ones (exploding)."
)
TABLE = "Per network and format: the worst layer, overflow, flush, and the advice"
NETWORK = ["activation", "init", "depth", "width", "batch", "seed"]


def newest_per_network(frame: pd.DataFrame) -> pd.DataFrame:
    """Each network's rows from the newest run that wrote it (a resumed grid spans runs)."""
    if frame.empty:
        return frame
    newest = frame.groupby("mlp_key")["run_id"].transform("max")
    return frame[frame["run_id"] == newest].reset_index(drop=True)


def network_table(rows: pd.DataFrame, advice: pd.DataFrame) -> pd.DataFrame:
    """One line per network and (format, recipe): minima over its layers, maxima of the
    damage, and the advice's count of layers per recommendation."""
    out = rows[rows["tensor"] == "output"]
    grad = rows[rows["tensor"] == "grad"]
    keys = [*NETWORK, "format", "recipe"]
    worst = out.loc[out.groupby(keys, sort=False)["sqnr_db"].idxmin()]
    table = worst[[*keys, "sqnr_db", "layer"]].rename(
        columns={"sqnr_db": "min_output_sqnr_db", "layer": "worst_layer"}
    )
    damage = rows.groupby(keys, sort=False).agg(
        max_overflow=("overflow_frac", "max"), max_flush=("flush_frac", "max")
    )
    grads = grad.groupby(keys, sort=False)["sqnr_db"].min().rename("min_grad_sqnr_db")
    table = table.join(grads, on=keys).join(damage, on=keys)
    if not advice.empty:
        recommended = advice.assign(case=advice["recommendation"])
        counts = recommended.groupby([*NETWORK, "case"]).size().rename("advised_layers")
        table["advised_layers"] = [
            int(counts.get((*(r[c] for c in NETWORK), f"{r['format']} {r['recipe']}"), 0))
            for _, r in table.iterrows()
        ]
        kept = advice[advice["verdict"] == KEEP].groupby(NETWORK).size().rename("bf16_layers")
        table = table.join(kept, on=NETWORK)
        table["bf16_layers"] = table["bf16_layers"].fillna(0).astype(int)
    return table.reset_index(drop=True)


def lowp_sweep(data: ReportData) -> Section:
    section = Section("lowp-sweep", TITLE, INTRO)
    rows = newest_per_network(data.records.get("sweep_formats", pd.DataFrame()))
    if rows.empty:
        section.status = "not run"
        section.notes.append(NOT_RUN)
        return section
    advice = newest_per_network(data.records.get("sweep_formats_advice", pd.DataFrame()))
    table = network_table(rows, advice)
    cases = rows.drop_duplicates(["format", "recipe"]).shape[0]
    alt = ALT.format(cases=cases)
    section.figures.append(
        cached_figure(data, "lowp-sweep", [rows], lambda: sqnr_by_layer(rows), alt, CAPTION)
    )
    section.tables.append(Table("lowp-sweep", TABLE, table))
    networks = rows.drop_duplicates("mlp_key").shape[0]
    if advice.empty:
        section.judge("warn", "no advice records beside the rows")
        return section
    keeping = advice[advice["verdict"] == KEEP]
    held = keeping.drop_duplicates("mlp_key").shape[0]
    section.verdict = f"{networks - held} of {networks} networks run every layer in a format asked"
    if held:
        first = keeping.iloc[0]
        section.judge(
            "warn",
            f"{len(keeping)} layers of {held} networks keep bf16, first "
            f"{first['activation']}/{first['init']} depth {first['depth']} layer {first['order']}",
        )
    else:
        section.judge("pass", section.verdict)
    return section
