"""``stability sweep --dtype float8_e4m3fn,mxfp4_e2m1``: the low-precision cells of a sweep.

A ``--dtype`` that names a low-precision format (``float8_e4m3fn``, ``mxfp8_e4m3``, ``nvfp4``,
their aliases, ...) is not a dtype the MLP runs in: its cells run the MLP in float32 (the
carrier) and emulate the format beside each Linear (``usermodel.lowp_mlp``), one pass per
network for all the formats asked. Rows go to the store as records ``sweep_formats`` (the
rows of ``probe --formats``, with the cell's fields and its ``cell_key``) and
``sweep_formats_advice`` (per layer, the cheapest of the formats asked that keeps
``--sqnr-target``), committed network by network; the grid's rows to ``<out
stem>-formats.csv``. Ordinary dtypes in the same list run as before, untouched.
"""

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from stability.cli.probe_formats import format_paths, parse_recipes
from stability.core.dtypes import DTYPES
from stability.core.lowp.formats import NAMES, LowpFormat, get_format
from stability.core.lowp.quantize import recipe_name
from stability.core.lowp.recipes import Recipe
from stability.core.registry import lookup
from stability.errors import StabilityError
from stability.results.csv_records import records_frame
from stability.results.files import write_csv
from stability.results.store import Store
from stability.sweep.cells import Cell
from stability.sweep.run import Progress
from stability.usermodel.lowp_advice import KEEP, recommend
from stability.usermodel.lowp_mlp import (
    CARRIER,
    FirstEvent,
    first_events,
    lowp_cell_key,
    mlp_format_rows,
)

if TYPE_CHECKING:
    import pandas as pd

ROWS, ADVICE = "sweep_formats", "sweep_formats_advice"


@dataclass(frozen=True)
class LowpPlan:
    """The low-precision part of a sweep: formats, recipes, target, and its CSV."""

    formats: list[LowpFormat]
    recipes: list[Recipe]
    target: float
    csv: Path

    def cases(self) -> list[tuple[LowpFormat, str]]:
        """(format, recipe name) per cell of one network: MX and NVFP4 once, fp8 per recipe."""
        return [(f, recipe_name(f, r)) for f in self.formats
                for r in ([self.recipes[0]] if f.blocked else self.recipes)]  # fmt: skip

    def keys(self, cell: Cell) -> list[str]:
        return [lowp_cell_key(cell.config, cell.batch, f, r) for f, r in self.cases()]


@dataclass
class LowpResult:
    """What the low-precision pass did and found."""

    run_id: int
    total: int
    done: int = 0
    skipped: int = 0
    rows: "pd.DataFrame" = field(default_factory=lambda: records_frame([]))
    advice: list[dict[str, Any]] = field(default_factory=list)


def split_dtypes(
    dtypes: list[str], args: argparse.Namespace, out: Path
) -> tuple[list[str], LowpPlan | None]:
    """The ordinary dtypes, and the low-precision plan (None when no format is listed).

    A name that is neither gets one line naming both kinds of choice."""
    ordinary: list[str] = []
    formats: dict[str, tuple[str, LowpFormat]] = {}
    for name in dtypes:
        if name in DTYPES:
            ordinary.append(name)
            continue
        lookup("dtype", name, {**DTYPES, **NAMES})
        fmt = get_format(name)
        if fmt.name in formats:
            first = formats[fmt.name][0]
            raise StabilityError(f"--dtype lists {fmt.name} twice (as {first!r} and {name!r}); "
                                 "give each format once")  # fmt: skip
        formats[fmt.name] = (name, fmt)
    if not formats:
        return ordinary, None
    plan = LowpPlan([f for _, f in formats.values()], parse_recipes(args), args.sqnr_target,
                    format_paths(out)[0])  # fmt: skip
    return ordinary, plan


def run_lowp(
    plan: LowpPlan,
    cells: list[Cell],
    store: Store,
    command: list[str],
    device: str,
    resume: bool,
    quiet: bool,
) -> LowpResult:
    """Every network of ``cells`` (carrier cells) with the plan's formats, committed one
    network at a time; with ``resume`` a network whose cells are all stored is skipped."""
    stored = _stored(store, {k for c in cells for k in plan.keys(c)}) if resume else {}
    todo = [c for c in cells if not set(plan.keys(c)) <= set(stored)]
    result = LowpResult(store.start_run("sweep", command, device), len(cells) * len(plan.cases()))
    result.skipped = result.total - len(todo) * len(plan.cases())
    progress = Progress(
        len(todo), enabled=None if not quiet else False, unit="low-precision networks"
    )
    for cell in todo:
        rows = mlp_format_rows(cell.config, cell.batch, plan.formats, plan.recipes)
        keyed = _with_cells(cell, plan, rows)
        advice = [{**_mlp_fields(cell), "candidates": ",".join(f"{f.name} {r}" for f, r
                   in plan.cases()), **a} for a in recommend(rows, plan.target)]  # fmt: skip
        store.write_records(result.run_id, {ROWS: keyed, ADVICE: advice})
        result.done += len(plan.cases())
        progress.advance(f"{cell.config.activation}/{cell.config.init} low precision")
    result.rows = _grid_rows(store, cells, plan)
    return result


def _mlp_fields(cell: Cell) -> dict[str, Any]:
    return {**cell.config.as_dict(), "batch": cell.batch, "carrier": CARRIER,
            "mlp_key": cell.key}  # fmt: skip


def _with_cells(cell: Cell, plan: LowpPlan, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with its cell's fields: ``dtype`` the format, ``cell_key`` the cell's."""
    keys = {(f.name, r): lowp_cell_key(cell.config, cell.batch, f, r) for f, r in plan.cases()}
    base = _mlp_fields(cell)
    return [{**base, "dtype": r["format"], "cell_key": keys[(r["format"], r["recipe"])], **r}
            for r in rows]  # fmt: skip


def _stored(store: Store, keys: set[str]) -> dict[str, int]:
    """Of ``keys``, those with rows in the store: key -> the newest run that wrote them."""
    frame = store.records(ROWS)
    if frame.empty:
        return {}
    mine = frame[frame["cell_key"].isin(keys)]
    return {str(k): int(v) for k, v in mine.groupby("cell_key")["run_id"].max().items()}


def _grid_rows(store: Store, cells: list[Cell], plan: LowpPlan) -> "pd.DataFrame":
    """The grid's rows from the store, each cell's newest run only, in grid order."""
    keys = [k for c in cells for k in plan.keys(c)]
    newest = _stored(store, set(keys))
    frame = store.records(ROWS)
    if frame.empty or not newest:
        return records_frame([])
    keep = frame["run_id"] == frame["cell_key"].map(newest)
    rows = frame[keep].copy()
    rows["_cell"] = rows["cell_key"].map({k: i for i, k in enumerate(keys)})
    rows = rows.sort_values(["_cell", "layer"], kind="stable").drop(columns=["_cell"])
    return rows.reset_index(drop=True)


def finish_lowp(result: LowpResult, plan: LowpPlan, text: TextIO, quiet: bool) -> None:
    """Write the grid's CSV, recompute the advice from its rows, print the summary."""
    if result.rows.empty:
        return
    write_csv(result.rows, plan.csv, "--out")
    groups = _by_network(result.rows)
    result.advice = [a for rows in groups.values() for a in _advice(rows, plan.target)]
    if not quiet:
        print(f"low precision: each network runs in {CARRIER} (the carrier), every Linear's "
              f"input, weight, output and gradient stored in the format and read back "
              f"(emulated); target {plan.target:g} dB", file=text)  # fmt: skip
        for rows in groups.values():
            _print_network(rows, plan.target, text)
    print(f"low-precision cells: {result.done} done, {result.skipped} skipped (resume), of "
          f"{result.total}; rows: {len(result.rows)} -> {plan.csv}", file=text)  # fmt: skip


def _by_network(frame: "pd.DataFrame") -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in frame.to_dict("records"):
        groups[str(r["mlp_key"])].append({str(k): v for k, v in r.items()})
    return groups


def _advice(rows: list[dict[str, Any]], target: float) -> list[dict[str, Any]]:
    first = rows[0]
    label = (f"{first['activation']}/{first['init']} depth {first['depth']} width "
             f"{first['width']} batch {first['batch']} seed {first['seed']}")  # fmt: skip
    return [{"network": label, "layer": a["order"], **a} for a in recommend(rows, target)]


def _print_network(rows: list[dict[str, Any]], target: float, text: TextIO) -> None:
    advice = _advice(rows, target)
    print(f"  {advice[0]['network']}:", file=text)
    events = first_events(rows, target)
    pad = max(len(f"{e['format']} {e['recipe']}") for e in events)
    for e in events:
        parts = [f"overflow: {_shown(e, 'overflow')}, grad {_shown(e, 'grad_overflow')}",
                 f"flush: {_shown(e, 'flush')}, grad {_shown(e, 'grad_flush')}",
                 f"below {target:g} dB: {_shown(e, 'below_target')}"]  # fmt: skip
        case = f"{e['format']} {e['recipe']}"
        print(f"    {case:<{pad}}  " + "; ".join(parts), file=text)
    print("    advice: " + "; ".join(_runs(advice)), file=text)


def _shown(event: dict[str, Any], key: str) -> str:
    found: FirstEvent | None = event[key]
    if found is None:
        return "none"
    unit = "sqnr" if key == "below_target" else "frac"
    return found.describe(unit, tensor=not key.startswith("grad_"))


def _runs(advice: list[dict[str, Any]]) -> list[str]:
    """Consecutive layers with one recommendation as one entry; the first kept layer's reason."""
    out: list[str] = []
    i = 0
    while i < len(advice):
        j = i
        while (
            j + 1 < len(advice) and advice[j + 1]["recommendation"] == advice[i]["recommendation"]
        ):
            j += 1
        span = f"layer {advice[i]['layer']}" if i == j else \
            f"layers {advice[i]['layer']}-{advice[j]['layer']}"  # fmt: skip
        why = f" ({advice[i]['reason']})" if advice[i]["verdict"] == KEEP else ""
        out.append(f"{span} {advice[i]['recommendation']}{why}")
        i = j + 1
    return out


def report_lowp_fail_on(advice: list[dict[str, Any]], fail_on: list[str]) -> int:
    """One stderr line per layer kept in bf16 under ``--fail-on keep-bf16``; how many."""
    if KEEP not in fail_on:
        return 0
    kept = [a for a in advice if a["verdict"] == KEEP]
    for a in kept:
        print(f"fail-on: {a['network']} layer {a['layer']} ({a['module']}): {KEEP}: "
              f"{a['reason']}", file=sys.stderr)  # fmt: skip
    if kept:
        print(f"fail-on: {len(kept)} of {len(advice)} low-precision layers keep bf16; exit 1",
              file=sys.stderr)  # fmt: skip
    return len(kept)


def json_part(result: LowpResult, plan: LowpPlan, flagged: int) -> dict[str, Any]:
    """``--json``'s ``low_precision`` field."""
    return {"run_id": result.run_id, "carrier": CARRIER, "target_db": plan.target,
            "cells": {"total": result.total, "done": result.done, "skipped": result.skipped},
            "csv": plan.csv, "rows": len(result.rows), "kept_bf16": flagged,
            "advice": result.advice}  # fmt: skip
