"""4. Precision headroom: overflow, subnormals and flush-to-zero in float16 and bfloat16."""

import pandas as pd

from stability.report import figures
from stability.report.inputs import ReportData
from stability.report.plan import PRECISION_CONFIGS, PRECISION_DTYPES
from stability.report.sections.figure_cache import cached_figure
from stability.report.sections.page import Section, Table
from stability.report.sections.rows import NO_SWEEP, shape_label, shape_rows

TITLE = "4. Precision headroom"
INTRO = (
    "Per layer, the fraction of values (solid: layer outputs; dashed: gradients) that "
    "overflow to inf, fall into the subnormal range, or flush to zero when stored in "
    "float16 (max 65504, smallest normal 6.1e-5) and bfloat16 (float32's range, 8 "
    "significant bits)."
)
NO_REDUCED = "No float16 or bfloat16 rows in the store for this shape."
CONFIGURATION = (
    "Configuration: {label}; precision: {modes} "
    "(emulated = float32 compute, rounded at every layer boundary)."
)
CONFIGS = (
    "Configurations: the library default (relu, kaiming_normal) and four that stress the "
    "range: N(0, 1) weights (overflow), Xavier with tanh and with sigmoid (the sigmoid "
    "gradient vanishes into subnormals), and nn.Linear's own default (flush to zero)."
)
ALT = (
    "Per-layer fractions of overflow, subnormal and flushed values for a few "
    "configurations in float16 and bfloat16."
)
CAPTION = (
    "Look for float16 overflowing where bfloat16 does not (range), and both flushing "
    "vanishing gradients to zero (the last layers of the backward pass are at the "
    "left). A curve on the floor is exactly 0."
)
TABLE = "Largest per-layer fractions, selected configs"
TABLE_FLOAT16 = "float16 across the whole sweep"

EVENT_COLUMNS = [
    "overflow_frac", "subnormal_frac", "flush_frac",
    "grad_overflow_frac", "grad_subnormal_frac", "grad_flush_frac",
]  # fmt: skip


def precision(data: ReportData) -> Section:
    section = Section("precision", TITLE, INTRO)
    shape = shape_rows(data.sweep)
    if shape.empty:
        section.status = "not run"
        section.notes.append(NO_SWEEP)
        return section
    reduced = shape[shape["dtype"].isin(PRECISION_DTYPES)]
    if reduced.empty:
        section.status = "not run"
        section.notes.append(NO_REDUCED)
        return section
    present = set(zip(reduced["activation"], reduced["init"], strict=True))
    configs = [c for c in PRECISION_CONFIGS if c in present] or sorted(present)[:5]
    modes = sorted(set(reduced["precision_mode"]))
    section.notes.append(CONFIGURATION.format(label=shape_label(reduced), modes=", ".join(modes)))
    section.notes.append(CONFIGS)
    missing = [
        f"{a}/{i} {d}"
        for a, i in configs
        for d in PRECISION_DTYPES
        if (reduced[(reduced["activation"] == a) & (reduced["init"] == i)]["dtype"] == d).sum() == 0
    ]
    if missing:
        section.status = "partial"
        section.notes.append("Not run: " + ", ".join(missing) + ".")
    section.figures.append(
        cached_figure(
            data,
            "precision",
            [reduced[["activation", "init", "dtype", "seed", "layer", *EVENT_COLUMNS]], configs],
            lambda: figures.precision_profiles(reduced, configs, PRECISION_DTYPES),
            ALT,
            CAPTION,
        )
    )
    chosen = reduced[
        [
            (a, i) in set(configs)
            for a, i in zip(reduced["activation"], reduced["init"], strict=True)
        ]
    ]
    section.tables.append(Table("precision", TABLE, _event_summary(chosen)))
    f16 = shape[shape["dtype"] == "float16"]
    if not f16.empty:
        section.tables.append(Table("precision-float16-all", TABLE_FLOAT16, _event_summary(f16)))
    return section


def _event_summary(rows: pd.DataFrame) -> pd.DataFrame:
    keys = ["activation", "init", "dtype", "precision_mode"]
    agg = rows.groupby(keys)[EVENT_COLUMNS].max()
    agg.columns = [f"max {c.removesuffix('_frac').replace('_', ' ')}" for c in agg.columns]
    any_event = rows[EVENT_COLUMNS].sum(axis=1) > 0
    first = rows[any_event].groupby(keys)["layer"].min().rename("first layer with an event")
    nonfinite = rows.groupby(keys)["nonfinite"].sum().rename("non-finite values")
    return agg.join(first).join(nonfinite).reset_index()
