"""Which sweep rows a section shows: one network shape, and one dtype for the atlas.

A store may hold several shapes and dtypes (the default sweep, a user's own small one);
the sections agree on one shape so their figures describe the same networks.
"""

from typing import cast

import numpy as np
import pandas as pd

from stability.report import figures
from stability.report.inputs import ReportData
from stability.sweep.run import DEFAULT_ACTIVATIONS, DEFAULT_INITS

DEFAULT_SHAPE = {"depth": 50, "width": 256, "batch": 256}
SHAPE_KEYS = ("depth", "width", "batch", "bias", "device")
NO_SWEEP = (
    "No sweep rows in the store: run `stability report` without --no-run, or `stability sweep`."
)


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
    key = counts.idxmax()
    mask = np.ones(len(pool), dtype=bool)
    for name, value in zip(SHAPE_KEYS, cast(tuple[object, ...], key), strict=True):
        mask &= (pool[name] == value).to_numpy()
    return pool[mask]


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
