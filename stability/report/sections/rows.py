"""Which sweep rows a section shows, and a line for what it leaves out.

A store may hold several shapes and dtypes (the default sweep, the precision grid, a user's
own). The figures agree on one *main* shape so they describe the same networks; every
config of every shape stays reachable in the verdict table and the CSV files, and each
figure that leaves configs out says which and why (``left_out``).
"""

from typing import cast

import numpy as np
import pandas as pd

from stability.report import figures
from stability.report.inputs import ReportData
from stability.results.tables import judged_table
from stability.sweep.run import DEFAULT_ACTIVATIONS, DEFAULT_INITS

DEFAULT_SHAPE = {"depth": 50, "width": 256, "batch": 256}
SHAPE_KEYS = ("depth", "width", "batch", "bias", "device")
FAMILY_KEYS = ("width", "batch", "bias", "device")  # a shape, at any depth
CONFIG = ["activation", "init", "dtype", "depth", "width", "batch"]
DTYPE_ORDER = ("float64", "float32", "float16", "bfloat16")
NO_SWEEP = (
    "No sweep rows in the store: run `stability report` without --no-run, or `stability sweep`."
)


def _select(pool: pd.DataFrame, keys: tuple[str, ...], key: tuple[object, ...]) -> pd.DataFrame:
    mask = np.ones(len(pool), dtype=bool)
    for name, value in zip(keys, key, strict=True):
        mask &= (pool[name] == value).to_numpy()
    return pool[mask]


def shape_rows(sweep: pd.DataFrame) -> pd.DataFrame:
    """Rows of one network shape: the default (50 x 256, batch 256) if stored, else the
    shape with the most rows, so a store holding only a small sweep still renders."""
    if sweep.empty or not set(SHAPE_KEYS) <= set(sweep.columns):
        return pd.DataFrame()
    default = sweep[
        (sweep["depth"] == DEFAULT_SHAPE["depth"])
        & (sweep["width"] == DEFAULT_SHAPE["width"])
        & (sweep["batch"] == DEFAULT_SHAPE["batch"])
    ]
    pool = default if not default.empty else sweep
    counts = pool.groupby(list(SHAPE_KEYS)).size()
    return _select(pool, SHAPE_KEYS, cast(tuple[object, ...], counts.idxmax()))


def family_rows(sweep: pd.DataFrame) -> pd.DataFrame:
    """The main shape at every depth stored: what the growth-against-depth figure draws."""
    main = shape_rows(sweep)
    if main.empty:
        return main
    key = tuple(main[k].iloc[0] for k in FAMILY_KEYS)
    return _select(sweep, FAMILY_KEYS, key)


def depth_families(sweep: pd.DataFrame) -> list[pd.DataFrame]:
    """Every shape run at several depths (same width, batch, bias, device), the main shape's
    first, then the most configs first: what the growth-against-depth figures draw."""
    if sweep.empty or not set(FAMILY_KEYS) <= set(sweep.columns):
        return []
    main = family_rows(sweep)
    main_key = tuple(main[k].iloc[0] for k in FAMILY_KEYS)
    families = [
        (key != main_key, -len(g), g)
        for key, g in sweep.groupby(list(FAMILY_KEYS), sort=False)
        if g["depth"].nunique() > 1
    ]
    return [g for _, _, g in sorted(families, key=lambda f: (f[0], f[1]))]


def shape_label(rows: pd.DataFrame) -> str:
    """The shape of ``rows`` in words, for a section's notes."""
    r = rows.iloc[0]
    return (
        f"depth {r['depth']}, width {r['width']}, batch {r['batch']}, "
        f"bias {'on' if r['bias'] else 'off'}, device {r['device']}"
    )


def atlas_rows(data: ReportData) -> pd.DataFrame:
    """The shown shape in float32 (else float64, else the first dtype stored)."""
    rows = shape_rows(data.sweep)
    if rows.empty:
        return rows
    for dtype in ("float32", "float64"):
        chosen = rows[rows["dtype"] == dtype]
        if not chosen.empty:
            return chosen
    first: pd.DataFrame = rows[rows["dtype"] == rows["dtype"].iloc[0]]
    return first


def axes(rows: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Activations and inits present, in the default sweep's order."""
    return (
        figures.ordered(rows["activation"], DEFAULT_ACTIVATIONS),
        figures.ordered(rows["init"], DEFAULT_INITS),
    )


def dtypes(rows: pd.DataFrame) -> list[str]:
    """The dtypes present, widest first."""
    return figures.ordered(rows["dtype"], DTYPE_ORDER)


def judged(data: ReportData) -> pd.DataFrame:
    """Every stored config's growth, verdict, margin and reason (``judged_table``), once."""
    if data.judged is None:
        data.judged = judged_table(data.sweep) if not data.sweep.empty else pd.DataFrame()
    return data.judged


def configs(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per config (seeds and layers dropped), for counting and naming."""
    return rows.drop_duplicates(CONFIG)[CONFIG]


def left_out(data: ReportData, drawn: pd.DataFrame, where: str) -> str:
    """A line naming the stored configs a figure did not draw, grouped by shape and dtype,
    and where they are instead; empty when everything was drawn."""
    every = configs(data.sweep)
    shown = configs(drawn).assign(_shown=True)
    rest = every.merge(shown, on=CONFIG, how="left")
    rest = rest[rest["_shown"].isna()]
    if rest.empty:
        return ""
    groups = rest.groupby(["dtype", "depth", "width", "batch"], sort=False).size()
    parts = [
        f"{n} in {dt} at depth {d}, width {w}, batch {b}"
        for (dt, d, w, b), n in zip(groups.index.tolist(), groups.tolist(), strict=True)
    ]
    return (
        f"Not drawn here: {len(rest)} of {len(every)} stored configs ({'; '.join(parts)}). {where}"
    )
