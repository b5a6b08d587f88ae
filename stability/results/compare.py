"""Comparing stored runs honestly: like with like (the same grid), figure by figure.

Sweep runs resume, so a run covers the cells it computed; two runs are comparable only
when they computed the same cells, which ``grid_fingerprint`` names. ``figure_changes``
says which per-layer figures moved between two runs and by how much (``stability diff``).
"""

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

SWEEP_FIGURES = ("preact_var", "act_var", "grad_var", "weight_grad_var")
BENCH_FIGURES = ("samples_per_s", "efficiency")
LABEL_KEYS = ("activation", "init", "dtype", "depth", "width", "batch", "seed")


def grid_fingerprint(cell_keys: Iterable[str]) -> str:
    """A short name for a set of cells: equal sets, equal names, whatever the order."""
    digest = hashlib.sha256("\n".join(sorted(set(cell_keys))).encode())
    return digest.hexdigest()[:10]


def run_grids(cells: pd.DataFrame) -> pd.DataFrame:
    """Per run: the fingerprint of the cells it completed, and how many there were.

    ``cells`` has ``run_id, cell_key, status`` (``Store.run_cells``); failed cells do not
    count, so a run with a failure is not compared with one that completed everything.
    """
    if cells.empty:
        return pd.DataFrame(columns=["run_id", "grid", "cells"])
    done = cells[cells["status"] == "done"]
    grouped = done.groupby("run_id")["cell_key"]
    return pd.DataFrame(
        {"grid": grouped.agg(grid_fingerprint), "cells": grouped.nunique()}
    ).reset_index()


def _sweep_label(row: pd.Series) -> str:
    return (
        f"{row['activation']}/{row['init']} {row['dtype']} depth {row['depth']} "
        f"width {row['width']} batch {row['batch']} seed {row['seed']}, layer {row['layer']}"
    )


def _changes(
    a: pd.DataFrame, b: pd.DataFrame, on: list[str], figures: Sequence[str], rtol: float
) -> pd.DataFrame:
    both = a.merge(b, on=on, suffixes=("_a", "_b"))
    out = []
    for figure in figures:
        if f"{figure}_a" not in both.columns or f"{figure}_b" not in both.columns:
            continue
        va = both[f"{figure}_a"].to_numpy(dtype=float)
        vb = both[f"{figure}_b"].to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(va == vb, 0.0, (vb - va) / np.abs(va))
        frame = both[on].assign(figure=figure, a=va, b=vb, rel_change=rel)
        out.append(frame)
    if not out:
        return pd.DataFrame(columns=[*on, "figure", "a", "b", "rel_change"])
    changes = pd.concat(out, ignore_index=True)
    # NaN on one side only, or a move from 0, is a move too (an infinite one).
    moved = ~(np.abs(changes["rel_change"]) <= rtol)
    both_nan = changes["a"].isna() & changes["b"].isna()
    changes = changes[moved & ~both_nan]
    order = np.argsort(-np.nan_to_num(np.abs(changes["rel_change"].to_numpy()), nan=np.inf))
    moved_changes: pd.DataFrame = changes.iloc[order].reset_index(drop=True)
    return moved_changes


def figure_changes(
    a: pd.DataFrame, b: pd.DataFrame, kind: str, rtol: float
) -> tuple[pd.DataFrame, int]:
    """The figures that moved by more than ``rtol`` (relative) from run ``a`` to run ``b``,
    largest first, each with a ``config`` label; and how many figures were compared.

    Sweep runs are matched per cell and layer, benchmark runs per benchmark name.
    """
    if a.empty or b.empty:
        return pd.DataFrame(), 0
    bench = kind == "bench"
    on = ["name"] if bench else ["cell_key", "layer"]
    figures = BENCH_FIGURES if bench else SWEEP_FIGURES
    common = a[on].drop_duplicates().merge(b[on].drop_duplicates(), on=on)
    compared = len(common) * sum(1 for f in figures if f in a.columns and f in b.columns)
    changes = _changes(a.drop_duplicates(on), b.drop_duplicates(on), on, figures, rtol)
    if bench:
        return changes.assign(config=changes["name"].astype(str)), compared
    labels = a.drop_duplicates(on).set_index(on)[list(LABEL_KEYS)]
    named = changes.join(labels, on=on)
    named["config"] = [_sweep_label(r) for _, r in named.iterrows()]
    return named, compared
