"""``stability diff RUN_A RUN_B``: which figures moved between two stored runs, and by how much.

One line per moved figure on stdout, largest relative change first (scriptable: ``| head``);
a one-line summary on stderr. Exit 0 when the runs were compared, moved or not; exit 2 when
they cannot be (an unknown run id, runs of different kinds, or nothing in common).
"""

import argparse
import math
import sys

from stability.cli.args import SubParsers, add_db_argument
from stability.errors import StabilityError
from stability.results.compare import figure_changes
from stability.results.store import Store

# The largest relative spread of a stability figure across CPU kernels, BLAS paths and
# thread counts is 1.5e-6 (docs/figure-tolerances.md): below this, nothing moved.
DEFAULT_RTOL = 1e-5
COMPARABLE = ("sweep", "bench")


def add_diff(sub: SubParsers) -> None:
    p = sub.add_parser(
        "diff",
        help="which figures moved between two stored runs (per config and layer)",
        description="Compare two runs of the results store: for sweep runs every per-layer "
        "variance of the cells both computed, for benchmark runs samples/s and efficiency "
        "per benchmark. Prints one line per figure that moved by more than --rtol, largest "
        "first. Run ids are the store's (the report's History section lists them).",
    )
    p.add_argument("run_a", type=int, metavar="RUN_A", help="run id to compare from")
    p.add_argument("run_b", type=int, metavar="RUN_B", help="run id to compare to")
    p.add_argument(
        "--rtol",
        type=float,
        default=DEFAULT_RTOL,
        help="smallest relative change that counts as moved (default: %(default)g, above the "
        "cross-machine spread of docs/figure-tolerances.md)",
    )
    add_db_argument(p)
    p.set_defaults(handler=_cmd_diff)


def _change(a: float, b: float, rel: float) -> str:
    if math.isfinite(rel):
        return f"{rel:+.2%}"
    if a == 0:
        return "from 0"
    return "non-finite now" if math.isfinite(a) else "non-finite before"


def _cmd_diff(args: argparse.Namespace) -> int:
    if not args.rtol >= 0:
        raise StabilityError(f"rtol must be >= 0, got {args.rtol}")
    if not args.db.exists():
        raise StabilityError(f"no results store at {str(args.db)!r}; pass --db")
    with Store.open(args.db, readonly=True) as store:  # a diff never writes
        runs = store.runs().set_index("id")
        ids = [int(i) for i in runs.index]
        for run_id in (args.run_a, args.run_b):
            if run_id not in ids:
                raise StabilityError(f"unknown run id {run_id}; expected one of {ids}")
        kinds = {r: str(runs.loc[r, "kind"]) for r in (args.run_a, args.run_b)}
        kind = kinds[args.run_a]
        if kind not in COMPARABLE or kinds[args.run_b] != kind:
            raise StabilityError(
                f"run {args.run_a} is a {kind} run and run {args.run_b} a {kinds[args.run_b]} "
                f"run; diff compares two sweep runs or two bench runs"
            )
        read = store.run_bench_results if kind == "bench" else store.run_sweep_rows
        a, b = read(args.run_a), read(args.run_b)
    changes, compared = figure_changes(a, b, kind, args.rtol)
    if compared == 0:
        raise StabilityError(
            f"runs {args.run_a} and {args.run_b} share no {kind} results to compare "
            "(different grids or benchmarks)"
        )
    columns = ("config", "figure", "a", "b", "rel_change")
    for config, figure, before, after, rel in zip(
        *(changes[c].tolist() for c in columns), strict=True
    ):
        change = _change(before, after, rel)
        print(f"{config}: {figure} {before:.6g} -> {after:.6g} ({change})")
    print(
        f"diff: {len(changes)} of {compared} figures moved by more than {args.rtol:g} "
        f"(relative) from run {args.run_a} to run {args.run_b} ({kind})",
        file=sys.stderr,
    )
    return 0
