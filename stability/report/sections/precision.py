"""4. Precision headroom: overflow, subnormals and flush-to-zero in float16 and bfloat16."""

import pandas as pd

from stability.report import figures_runs
from stability.report.figures_runs import EVENT_COLUMNS
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
    "left). A curve on the floor is exactly 0; a panel that says 'all zero' had no event "
    "in any layer."
)
ALL_ZERO = (
    "{dtype}: every fraction is exactly 0 in every layer of these configs (no overflow, no "
    "subnormal, no flush to zero), so its panels hold only flat lines on the floor.{why}"
)
BFLOAT16_WHY = " bfloat16 keeps float32's exponent range; it loses precision, not range."
SUBSET = (
    "The figure draws {k} of the {n} activation/init pairs stored in float16 or bfloat16 "
    "(the telling ones, as a grid of all would be unreadable); every pair's largest "
    "fractions are in the tables below."
)
HEALTH = "{what} in {configs}"
HEALTHY = "no overflow or non-finite value in {dtypes}"
TABLE = "Largest per-layer fractions, selected configs"
TABLE_FLOAT16 = "float16 across the whole sweep"


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
            lambda: figures_runs.precision_profiles(reduced, configs, PRECISION_DTYPES),
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
    for dtype in PRECISION_DTYPES:
        rows = chosen[chosen["dtype"] == dtype]
        if not rows.empty and not rows[EVENT_COLUMNS].to_numpy().any():
            why = BFLOAT16_WHY if dtype == "bfloat16" else ""
            section.notes.append(ALL_ZERO.format(dtype=dtype, why=why))
    if len(present) > len(configs):
        section.notes.append(SUBSET.format(k=len(configs), n=len(present)))
    section.tables.append(Table("precision", TABLE, _event_summary(chosen)))
    _judge(section, reduced)
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


def _judge(section: Section, reduced: pd.DataFrame) -> None:
    """Warn where a reduced dtype overflowed or produced inf/NaN: a config to avoid there."""
    keys = ["activation", "init", "dtype"]
    hit = reduced.groupby(keys)[["overflow_frac", "grad_overflow_frac", "nonfinite"]].max()
    bad = hit[(hit > 0).any(axis=1)].reset_index()
    if bad.empty:
        names = ", ".join(sorted(set(reduced["dtype"])))
        section.judge("pass", HEALTHY.format(dtypes=names))
        return
    configs = ", ".join(f"{r.activation}/{r.init} {r.dtype}" for r in bad.head(4).itertuples())
    more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
    section.judge("warn", HEALTH.format(what="overflow or inf/NaN", configs=configs + more))
