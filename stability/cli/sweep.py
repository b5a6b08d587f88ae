"""``stability sweep``: probe a grid of MLPs layer by layer into the store and a CSV."""

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stability.cli.args import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    SubParsers,
    add_db_argument,
    ints,
    names,
)
from stability.cli.json_output import add_json_argument, emit, human, stdout_to_stderr
from stability.cli.limits import check_seeds, check_sweep
from stability.cli.probe_formats import add_recipe_arguments
from stability.cli.sweep_formats import (
    LowpPlan,
    finish_lowp,
    json_part,
    report_lowp_fail_on,
    run_lowp,
    split_dtypes,
)
from stability.core.dtypes import DTYPES
from stability.core.registry import lookup
from stability.errors import StabilityError
from stability.results.csv_records import records_frame, write_records_csv
from stability.results.files import check_outputs
from stability.results.store import Store
from stability.results.verdict_words import VERDICTS
from stability.sweep.cells import DEFAULT_ACTIVATIONS, DEFAULT_INITS, Cell, SweepGrid
from stability.sweep.executors import Executor, local_executor
from stability.sweep.run import Progress, SweepSummary, run_sweep
from stability.sweep.stacks import default_budget, parse_budget
from stability.sweep.vectorised import VectorisedExecutor
from stability.usermodel.lowp_advice import FORMAT_VERDICTS
from stability.usermodel.lowp_mlp import CARRIER

if TYPE_CHECKING:  # pandas is loaded only to judge or print the rows (findings, --fail-on,
    import pandas as pd  # --json): a quiet sweep writes its CSV without it

DEFAULT_SWEEP_CSV = Path("results") / "sweep.csv"


def add_sweep(sub: SubParsers) -> None:
    p = sub.add_parser(
        "sweep",
        help="probe a grid of MLPs layer by layer; rows go to the store and a CSV",
        description="Probe every (activation, init, depth, width, dtype, seed, batch) cell. "
        "Exit codes: 0 done; 1 a cell failed, or a config got a --fail-on verdict (results "
        "are still written); 2 bad input; 130 interrupted (completed cells are kept).",
    )
    p.add_argument(
        "--activation",
        type=names,
        default=list(DEFAULT_ACTIVATIONS),
        help="comma list (default: %(default)s)",
    )
    p.add_argument(
        "--init", type=names, default=list(DEFAULT_INITS), help="comma list (default: %(default)s)"
    )
    p.add_argument("--depth", type=ints, default=[50], help="comma list (default: 50)")
    p.add_argument("--width", type=ints, default=[256], help="comma list (default: 256)")
    p.add_argument(
        "--dtype",
        type=names,
        default=["float32", "float16"],
        help="comma list of float64,float32,bfloat16,float16, and low-precision formats "
        "(float8_e4m3fn, float8_e5m2, hybrid, mxfp8_e4m3, mxfp8_e5m2, mxfp6_e3m2, mxfp4_e2m1, "
        "nvfp4, or e4m3, mxfp8, mxfp4, ...), whose cells run the MLP in float32 and emulate "
        "the format per Linear, in this process, into <out stem>-formats.csv "
        "(default: float32,float16)",
    )
    p.add_argument("--seeds", type=ints, default=[0, 1, 2], help="comma list (default: 0,1,2)")
    p.add_argument("--batch", type=ints, default=[256], help="comma list, >= 2 (default: 256)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument(
        "--bias-var",
        type=float,
        default=0.0,
        help="sigma_b^2: biases drawn from N(0, this) instead of 0 (default: 0; see "
        "'stability criticality')",
    )
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument(
        "--per-cell",
        action="store_true",
        help="run every cell as its own network (default: cells sharing activation, depth, "
        "width, dtype and batch run as one stacked network; rows are the same to float "
        "rounding; --scheduler always runs per cell)",
    )
    p.add_argument(
        "--memory-budget",
        type=_budget,
        default=None,
        metavar="SIZE",
        help="memory for the stacked networks, all workers together: 512M, 2G, or MiB "
        "(default: a quarter of the free memory on CPU, at most 4 GiB; half the free GPU "
        "memory on CUDA)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        help="run cells on Dask: a scheduler address (tcp://host:8786), or 'local' for a"
        " LocalCluster of --jobs worker processes (needs: pip install 'stability[dask]')",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_SWEEP_CSV,
        help="CSV of this grid's rows (default: %(default)s)",
    )
    add_db_argument(p)
    p.add_argument("--resume", action="store_true", help="skip cells already in the store")
    p.add_argument(
        "--yes",
        action="store_true",
        help="run beyond the limits on --depth and the number of --seeds (see docs/exit-codes.md)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress, no findings summary")
    add_recipe_arguments(p, "a layer's")
    add_json_argument(p, "sweep")
    p.add_argument(
        "--fail-on",
        type=names,
        default=None,
        metavar="VERDICTS",
        help="comma list of verdicts, from " + ",".join(VERDICTS + FORMAT_VERDICTS) + ": after "
        "writing all results, name each config (seeds averaged; keep-bf16: each layer of a "
        "low-precision cell) with one of them on stderr and exit 1 "
        "(default: always exit 0 unless a cell fails)",
    )
    p.set_defaults(handler=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise StabilityError(f"jobs must be >= 1, got {args.jobs}")
    lists = {"--activation": args.activation, "--init": args.init, "--depth": args.depth,
             "--width": args.width, "--dtype": args.dtype, "--seeds": args.seeds,
             "--batch": args.batch}  # fmt: skip
    empty = [flag for flag, values in lists.items() if not values]
    if empty:
        raise StabilityError(
            f"the grid is empty ({', '.join(empty)}: no value); {args.out} is untouched"
        )
    check_seeds(len(args.seeds), args.yes, listed=True)  # before a cell list is built
    ordinary, lowp = split_dtypes(args.dtype, args, args.out)
    grid = SweepGrid(
        activations=args.activation,
        inits=args.init,
        depths=args.depth,
        widths=args.width,
        dtypes=ordinary or [CARRIER],  # low-precision cells run the carrier's networks
        seeds=args.seeds,
        batches=args.batch,
        device=args.device,
        bias_var=args.bias_var,
    )
    cells = grid.cells()  # validates every name and size before any work
    jobs = check_sweep(cells, args.jobs, args.scheduler, args.yes)  # memory, bounds, --jobs
    executor = _executor(jobs, args.scheduler, args.per_cell, args.memory_budget, args.device)
    fail_on = _fail_on_verdicts(args.fail_on, bool(ordinary), lowp is not None)
    out = args.out
    outputs = {"--out": out, **({"--out (formats)": lowp.csv} if lowp else {})}
    check_outputs(outputs, store=args.db)  # not the store, not a database, writable
    if args.device.startswith("cuda") and args.scheduler is None:  # else the workers need CUDA
        import torch

        if not torch.cuda.is_available():
            raise StabilityError(f"device {args.device!r} requested but CUDA is not available")
    if ordinary:
        code, body = _ordinary(args, grid, cells, executor, fail_on)
        if code == EXIT_INTERRUPTED:
            return code
    else:
        code, body = 0, {}
    if lowp is not None:
        networks = dataclasses.replace(grid, dtypes=[CARRIER]).cells()  # one per network
        code = max(code, _low_precision(args, lowp, networks, fail_on, body))
        if code == EXIT_INTERRUPTED:
            return code
    if args.json:
        emit("sweep", {**body, "exit_code": code})
    return code


def _low_precision(
    args: argparse.Namespace, lowp: LowpPlan, cells: list[Cell], fail_on: list[str],
    body: dict[str, object],
) -> int:  # fmt: skip
    """The low-precision cells after the ordinary ones: exit code, the JSON part in ``body``."""
    command = ["stability", *sys.argv[1:]]
    with stdout_to_stderr(args.json), Store.open(args.db) as store:
        try:
            result = run_lowp(lowp, cells, store, command, args.device, args.resume, args.quiet)
        except KeyboardInterrupt:
            print(f"\ninterrupted: completed networks are kept in {store.path}; "
                  "rerun with --resume to finish", file=sys.stderr)  # fmt: skip
            return EXIT_INTERRUPTED
    finish_lowp(result, lowp, human(args.json), args.quiet)
    flagged = report_lowp_fail_on(result.advice, fail_on)
    if args.json:
        body.setdefault("run_id", result.run_id)
        body.setdefault("db", args.db)
        body["low_precision"] = json_part(result, lowp, flagged)
    return EXIT_FAILED if flagged else 0


def _ordinary(
    args: argparse.Namespace, grid: SweepGrid, cells: list[Cell], executor: Executor,
    fail_on: list[str],
) -> tuple[int, dict[str, object]]:  # fmt: skip
    """The ordinary dtypes' cells, as the sweep always ran them: exit code and JSON body."""
    out = args.out
    fail_on = [v for v in fail_on if v in VERDICTS]
    with stdout_to_stderr(args.json), Store.open(args.db) as store:
        if args.resume:
            _note_rowless(store, {c.key for c in cells})
        progress = Progress(len(cells), enabled=None if not args.quiet else False)
        try:
            summary = run_sweep(
                grid,
                store,
                ["stability", *sys.argv[1:]],
                executor,
                args.resume,
                progress,
            )
        except KeyboardInterrupt:
            print(
                f"\ninterrupted: completed cells are kept in {store.path}; "
                "rerun with --resume to finish",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED, {}
        records = store.sweep_records(c.key for c in cells)
    if not records:  # nothing to judge: never a pass, never an empty CSV over an earlier one
        _check_no_rows(summary, out, fail_on, args.db)
    else:
        write_records_csv(records, out, "--out")
    rows = records_frame(records) if not args.quiet or fail_on or args.json else None
    text = human(args.json)
    if rows is not None and not args.quiet and records:
        from stability.results.findings import findings_lines

        print("\n".join(findings_lines(rows, str(out))), file=text)
    print(summary.line(), file=text)
    where = f"{out} is untouched" if not records else f"-> {out}"
    print(f"rows: {len(records)} {where} (store: {args.db})", file=text)
    for failure in summary.failures[:5]:
        print(f"failed: {failure}", file=sys.stderr)
    flagged = _report_fail_on(rows, fail_on, f"{out} (store: {args.db})") if rows is not None else 0
    code = EXIT_FAILED if summary.failed or flagged else 0
    if rows is None or not args.json:  # the findings document costs a quarter second at
        return code, {}  # 2,000 rows
    return code, _json_body(summary, rows, out, args.db, fail_on, flagged, code)


def _note_rowless(store: Store, keys: set[str]) -> None:
    """Say so when ``--resume`` runs again cells the store marks done but holds no rows for."""
    marked = store.run_cells()
    done = set(marked.loc[marked["status"] == "done", "cell_key"]) & keys
    rowless = len(done - store.done_keys())
    if rowless:
        print(f"note: {rowless} cells marked done in {store.path} have no rows there; "
              "running them again", file=sys.stderr)  # fmt: skip


def _check_no_rows(summary: SweepSummary, out: Path, fail_on: list[str], db: Path) -> None:
    """No row came out of the run or the store. Every cell failed: exit 1 follows, with
    their errors. Otherwise, or with ``--fail-on`` (a judgement of nothing is none): exit 2."""
    if summary.failed and not fail_on:
        return
    why = (
        f"{summary.failed} of {summary.total} cells failed"
        if summary.failed
        else (f"the store {str(db)!r} holds no rows for the {summary.total} cells")
    )
    first = f" (first: {summary.failures[0]})" if summary.failures else ""
    judged = f"--fail-on {','.join(fail_on)} judged 0 rows" if fail_on else "0 rows"
    raise StabilityError(f"{judged}: {why}{first}; {out} is untouched")


def _json_body(
    summary: SweepSummary,
    rows: "pd.DataFrame",
    out: Path,
    db: Path,
    fail_on: list[str],
    flagged: int,
    code: int,
) -> dict[str, object]:
    """What ``--json`` prints: the run's counts, where its rows are, and the findings."""
    from stability.results.findings import findings_document

    return {
        "exit_code": code,
        "run_id": summary.run_id,
        "cells": {
            "total": summary.total,
            "done": summary.done,
            "skipped": summary.skipped,
            "failed": summary.failed,
        },
        "seconds": summary.seconds,
        "failures": summary.failures,
        "csv": out,
        "db": db,
        "rows": len(rows),
        "fail_on": {"verdicts": fail_on, "flagged_configs": flagged},
        **findings_document(rows),
    }


def _budget(text: str) -> int:
    """``--memory-budget``'s parser: the library's message, as argparse's one line."""
    try:
        return parse_budget(text)
    except StabilityError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _executor(
    jobs: int, scheduler: str | None, per_cell: bool, budget: int | None, device: str
) -> Executor:
    """``--scheduler`` runs the cells on Dask (``--jobs`` local workers for 'local');
    without it ``--jobs`` 1 runs them in this process, more in a local process pool, as
    stacks of cells of one shape unless ``--per-cell``."""
    if scheduler is not None:
        from stability.sweep.dask_executor import DaskExecutor  # a missing extra fails here

        return DaskExecutor(scheduler, workers=jobs)
    if per_cell:
        return local_executor(jobs)
    return VectorisedExecutor(jobs, default_budget(device) if budget is None else budget)


def _fail_on_verdicts(given: list[str] | None, ordinary: bool, lowp: bool) -> list[str]:
    """``--fail-on``'s names, each one a verdict ``summary_table`` assigns (or keep-bf16,
    with low-precision cells); [] without it. A verdict no cell of the grid can get judges
    nothing: refused."""
    if given is None:
        return []
    choices = {v: v for v in VERDICTS + (FORMAT_VERDICTS if lowp else ())}
    if not given:
        raise StabilityError(
            f"--fail-on needs at least one verdict; expected some of {sorted(choices)}"
        )
    for name in given:
        if name in FORMAT_VERDICTS and not lowp:
            raise StabilityError(f"--fail-on {name} judges low-precision cells, and --dtype "
                                 "lists no low-precision format (e.g. float8_e4m3fn)")  # fmt: skip
    verdicts = [lookup("verdict", name, choices) for name in given]
    for v in verdicts:
        if v in VERDICTS and not ordinary:
            raise StabilityError(f"--fail-on {v} judges the ordinary dtypes' rows, and --dtype "
                                 f"lists none of {sorted(DTYPES)}")  # fmt: skip
    return verdicts


def _report_fail_on(rows: "pd.DataFrame", fail_on: list[str], written: str) -> int:
    """Print one stderr line per config whose verdict is in ``fail_on``; return how many."""
    if not fail_on or rows.empty:
        return 0
    from stability.results.tables import summary_table, with_verdicts

    table = summary_table(rows)
    flagged = with_verdicts(table, fail_on)
    for r in flagged.itertuples(index=False):
        mode = "" if r.precision_mode == "native" else f" ({r.precision_mode})"
        print(
            f"fail-on: {r.activation}/{r.init} {r.dtype}{mode} depth {r.depth} width {r.width} "
            f"batch {r.batch}: {r.verdict} (log10 growth forward {r.fwd_log10_growth:+g}, "
            f"backward {r.bwd_log10_growth:+g}; {r.nonfinite:g} non-finite values; "
            f"{r.seeds} seeds)",
            file=sys.stderr,
        )
    if len(flagged):
        counts = ", ".join(f"{v} {n}" for v, n in flagged["verdict"].value_counts().items())
        print(
            f"fail-on: {len(flagged)} of {len(table)} configs got a verdict in "
            f"--fail-on {','.join(fail_on)} ({counts}); exit 1, results are in {written}",
            file=sys.stderr,
        )
    return len(flagged)
