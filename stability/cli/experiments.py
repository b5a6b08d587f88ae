"""``stability experiments``: the notes' experiments, reproduced with seeds (issue 18)."""

import argparse
import sys
from pathlib import Path

from stability.cli.args import EXIT_FAILED, SubParsers, add_db_argument, names, nonempty
from stability.cli.json_output import add_json_argument, emit, human, stdout_to_stderr
from stability.errors import StabilityError
from stability.experiments.names import NAMES

DEFAULT_OUT = Path("results") / "experiments"
FORMATS = ("png", "svg")


def add_experiments(sub: SubParsers) -> None:
    p = sub.add_parser(
        "experiments",
        help="rerun the notes' experiments (over/underfitting, weight decay, dropout, depth, "
        "float16) over seeds; a CSV and a figure each, rows to the store",
        description="Run the course notes' experiments on synthetic data, several seeds "
        "each, and judge each claim as a count over seeds. Writes <out>/<name>.csv and "
        "<out>/<name>.<format> per experiment and stores the rows (exp_<name>). Progress "
        "on stderr. Exit codes: 0 every claim held; 1 a claim failed (results are still "
        "written); 2 bad input.",
    )
    p.add_argument("--quick", action="store_true",
                   help="small sizes: all five in about a minute on 2 CPU cores")  # fmt: skip
    p.add_argument(
        "--only",
        type=names,
        default=None,
        metavar="NAME,...",
        help=f"comma list from {','.join(NAMES)} (default: all)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds per experiment (default: each one's own, fewer with --quick; at most "
        "1000 without --yes)",
    )
    p.add_argument("--yes", action="store_true",
                   help="run beyond the limit on --seeds (see docs/exit-codes.md)")  # fmt: skip
    p.add_argument(
        "--device", default="cpu", help="cpu or cuda (float16 native on cuda; default: cpu)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="folder for the CSVs and figures (default: %(default)s)",
    )
    p.add_argument("--format", default="png", help="figure format: png or svg (default: png)")
    add_json_argument(p, "experiments")
    add_db_argument(p)
    p.set_defaults(handler=_cmd_experiments)  # fmt: skip


def _cmd_experiments(args: argparse.Namespace) -> int:
    from stability.core.registry import lookup

    if args.only is not None:  # checked before torch loads: a typo costs no import time
        for name in nonempty("--only", args.only, "experiment"):
            lookup("experiment", name, {n: n for n in NAMES})
    from stability.core.config import MLPConfig
    from stability.experiments.common import seed_list
    from stability.experiments.registry import select
    from stability.experiments.runner import (
        output_paths,
        run_experiments,
        store_results,
        write_outputs,
    )
    from stability.results.files import check_outputs
    from stability.results.store import Store

    chosen = select(args.only)
    if args.seeds is not None:
        from stability.cli.limits import check_seeds

        check_seeds(args.seeds, args.yes)  # before seed_list builds the list
        seed_list(args.seeds)
    fmt = lookup("figure format", str(args.format).lower(), {f: f for f in FORMATS})
    MLPConfig(device=args.device)  # the device's one-line check
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise StabilityError(f"device {args.device!r} requested but CUDA is not available")
    if args.out.exists() and not args.out.is_dir():
        raise StabilityError(f"--out {str(args.out)!r} is a file; pass a folder")
    check_outputs(output_paths([e.name for e in chosen], args.out, fmt), store=args.db)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with stdout_to_stderr(args.json):  # --json: stdout holds the document only
        results = run_experiments(chosen, args.quick, args.seeds, args.device, say)
        written = write_outputs(results, args.out, fmt)
        with Store.open(args.db) as store:
            run_id = store_results(store, results, ["stability", *sys.argv[1:]], args.device)
    ok = all(r.ok for r in results)
    code = 0 if ok else EXIT_FAILED
    text = human(args.json)
    for r in results:
        print(f"{r.experiment.name} ({r.seeds} seeds, {r.seconds:.1f} s): {r.experiment.title}",
              file=text)  # fmt: skip
        for claim in r.claims:
            print(f"  {claim.line()}", file=text)
    print(f"files: {args.out}/ ({len(written)} files); store: {args.db} (run {run_id})", file=text)
    if args.json:
        emit("experiments", {"exit_code": code, "run_id": run_id, "db": args.db,
                             "quick": args.quick, "ok": ok,
                             "seconds": round(sum(r.seconds for r in results), 2),
                             "files": written,
                             "experiments": [r.summary() for r in results]})  # fmt: skip
    return code
