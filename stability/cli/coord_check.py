"""``stability coord-check``: does the model's scale survive width (and depth)? (muP checks)

Builds the model at each width (and depth) and seed, applies the named parameterisation,
trains a few steps on one fixed batch and fits, per module and step, the log-log exponent of
its output, its output's change and its weight update's effect against width (depth), each
judged against the scale-stable exponent (``stability.scaling``). Rows go to a CSV and the
store (records ``coord_check`` and ``coord_check_fit``, drawn by the report's "Width and
depth scaling"). Exit codes: 0 done; 1 ``--fail-on drift`` found a drift, or ``--baseline``
found an exponent that moved; 2 bad input.
"""

import argparse
import sys
from pathlib import Path
from typing import Any

from stability.cli.args import EXIT_FAILED, SubParsers, add_db_argument, ints, names
from stability.cli.json_output import add_json_argument, emit, human
from stability.errors import StabilityError

DEFAULT_CSV = Path("results") / "coord-check.csv"
PARAMS = ("sp", "mup", "depth-mup", "completep")


def add_coord_check(sub: SubParsers) -> None:
    p = sub.add_parser(
        "coord-check",
        help="coordinate check: do activations and updates keep their scale as width and "
        "depth grow (muP, Depth-muP, CompleteP)?",
        description="Train each width (and depth) for a few steps and fit, per module, how "
        "its output, its output's change and its weight update's effect scale with width "
        "(depth); judge each against the scale-stable exponent. Without --model: the "
        "built-in residual MLP. Exit codes: 0 done; 1 --fail-on drift or --baseline found "
        "something; 2 bad input.",
    )
    p.add_argument("--model", default=None, help="pkg.module:factory taking the width (and "
                   "depth) keyword arguments (default: the built-in MLP)")  # fmt: skip
    p.add_argument("--model-args", default=None, help="JSON object of further kwargs")
    p.add_argument("--input", default=None, help="shape spec or pkg.module:make_batch "
                   "(needed with --model)")  # fmt: skip
    p.add_argument("--target", default=None, help="target spec or reference")
    p.add_argument("--loss", default=None, help="loss name (default: mse for the built-in "
                   "MLP, else chosen as probe does)")  # fmt: skip
    p.add_argument("--widths", type=ints, default=[64, 128, 256, 512, 1024],
                   help="comma list (default: 64,128,256,512,1024)")  # fmt: skip
    p.add_argument("--depths", type=ints, default=[],
                   help="comma list (default: none, the factory's own depth)")  # fmt: skip
    p.add_argument("--steps", type=ints, default=[1, 2, 3],
                   help="recorded steps, each >= 1 (default: 1,2,3)")  # fmt: skip
    p.add_argument("--optimizer", default="adam", help="adam, adamw or sgd")
    p.add_argument("--lr", type=float, default=1e-2, help="base lr (at the base width)")
    p.add_argument("--eps", type=float, default=1e-8, help="Adam's eps at the base width")
    p.add_argument("--seeds", type=int, default=3, help="models per size (default: 3)")
    p.add_argument("--param", default="mup", help="one of " + ", ".join(PARAMS))
    p.add_argument("--base-width", type=int, default=None, help="default: smallest width")
    p.add_argument("--base-depth", type=int, default=None, help="default: smallest depth")
    p.add_argument("--width-arg", default="width", help="the factory's width kwarg")
    p.add_argument("--depth-arg", default="depth", help="the factory's depth kwarg")
    p.add_argument("--branches", type=names, default=[], metavar="GLOBS",
                   help="each residual branch's last module (default: the model's "
                   "residual_branches)")  # fmt: skip
    p.add_argument("--without", type=names, default=[], metavar="RULES",
                   help="drop parameterisation rules (a known-bad variant): "
                   "output-multiplier, zero-readout, hidden-lr, lr, eps, branch-multiplier, "
                   "depth-lr")  # fmt: skip
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (0: torch's "
        "default; default %(default)s, fastest for small models on shared cores)",
    )
    p.add_argument("--fail-on", type=names, default=[], metavar="VERDICTS",
                   help="drift: exit 1 when a module drifts")  # fmt: skip
    p.add_argument("--baseline-out", type=Path, default=None, help="write the exponents here")
    p.add_argument("--baseline", type=Path, default=None, help="judge against this baseline")
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_CSV,
        help="CSV of the fits (default: "
        "%(default)s); the per-step rows beside it, named <stem>-rows.csv",
    )
    p.add_argument("--yes", action="store_true", help="allow long runs")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_db_argument(p)
    add_json_argument(p, "coord-check")
    p.set_defaults(handler=_cmd)


def spec_from_args(args: argparse.Namespace) -> Any:
    """The ``CoordSpec`` the flags name (one line and exit 2 on bad input)."""
    from stability.scaling import mlp
    from stability.scaling.run import CoordSpec, validate
    from stability.usermodel.refs import parse_kwargs

    bad = [v for v in args.fail_on if v != "drift"]
    if bad:
        raise StabilityError(f"unknown verdict {bad[0]!r} in --fail-on; expected one of "
                             "['drift']")  # fmt: skip
    if args.model is not None and not args.input:
        raise StabilityError("--model needs --input (a shape like 8x16:float32 or "
                             "pkg.mod:make_batch)")  # fmt: skip
    builtin = args.model is None
    spec = CoordSpec(
        model=mlp.MODEL_REF if builtin else args.model,
        input=args.input or mlp.INPUT_REF,
        target=args.target,
        loss=args.loss or ("mse" if builtin else None),
        model_args=tuple(sorted(parse_kwargs(args.model_args).items())),
        widths=tuple(args.widths), depths=tuple(args.depths), steps=tuple(args.steps),
        optimizer=args.optimizer, lr=args.lr, eps=args.eps, seeds=args.seeds,
        param=args.param, base_width=args.base_width, base_depth=args.base_depth,
        width_arg=args.width_arg, depth_arg=args.depth_arg, branches=tuple(args.branches),
        without=tuple(args.without), device=args.device, threads=args.threads, yes=args.yes,
    )  # fmt: skip
    validate(spec)
    return spec


def _stable(table: Any) -> int:
    return int(table["verdict"].str.endswith("-stable").sum()) if len(table) else 0


def _records(frame: Any, context: dict[str, Any]) -> list[dict[str, Any]]:
    return [context | {str(k): v for k, v in r.items()} for r in frame.to_dict("records")]


def _cmd(args: argparse.Namespace) -> int:
    import json

    import pandas as pd

    from stability.results.files import check_outputs, write_csv, write_text
    from stability.results.store import Store
    from stability.scaling import baseline
    from stability.scaling.fit import drifting
    from stability.scaling.run import run_check

    spec = spec_from_args(args)
    rows_csv = args.out.with_name(args.out.stem + "-rows.csv")
    outputs = {"--out": args.out, "rows CSV": rows_csv}
    if args.baseline_out is not None:
        outputs["--baseline-out"] = args.baseline_out
    check_outputs(outputs, store=args.db)
    base = baseline.load(args.baseline, spec.as_dict()) if args.baseline else None
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise StabilityError(f"device {args.device!r} requested but CUDA is not available")
    quiet = args.quiet

    def progress(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    result = run_check(spec, progress)
    frame, fits, table = result["rows"], result["fits"], result["verdicts"]
    assert isinstance(frame, pd.DataFrame) and isinstance(fits, pd.DataFrame)
    assert isinstance(table, pd.DataFrame)
    context = {"model": spec.model, "param": spec.param, "optimizer": spec.optimizer,
               "lr": spec.lr}  # fmt: skip
    fit_rows = _records(fits, context)
    verdict_rows = _records(table, context)
    with Store.open(args.db) as store:
        run_id = store.write_records_run(
            "coord-check", ["stability", *sys.argv[1:]], args.device,
            {"coord_check": _records(frame, context),
             "coord_check_fit": fit_rows, "coord_check_verdict": verdict_rows},
        )  # fmt: skip
    write_csv(fits, args.out, "--out")
    write_csv(frame, rows_csv, "rows CSV")
    if args.baseline_out is not None:
        doc = baseline.document(spec.as_dict(), fits)
        write_text(args.baseline_out, json.dumps(doc, indent=1) + "\n", "--baseline-out")
    text = human(args.json)
    for r in verdict_rows:
        line = r["message"] or (
            f"{r['module']} (worst: {r['figure']} {r['axis']}^"
            f"{r['slope']:.2f} +- {r['tol']:.2f} at step {r['step']})"
        )
        if r["verdict"] == "inconclusive":
            line = (f"{r['module']}: no exponent pinned tighter than +- {r['tol']:.2f}, wider "
                    "than the SP-muP gap: more --widths or --seeds")  # fmt: skip
        print(f"{r['verdict']:>12}  {line}", file=text)
    for note in result["notes"]:
        print(f"note: {note}", file=text)
    drifts = list(drifting(table))
    n = len(table)
    print(
        f"{_stable(table)} of {n} module checks scale-stable under --param {spec.param}; "
        f"fits -> {args.out}, rows -> {rows_csv} (store: {args.db}, run {run_id})",
        file=text,
    )
    moved = baseline.judge(base, fits) if base is not None else []
    for line in moved:
        print(f"baseline: {line}", file=sys.stderr)
    failed = bool(moved) or ("drift" in args.fail_on and bool(drifts))
    if "drift" in args.fail_on and drifts:
        print(
            f"fail-on: {len(drifts)} module checks drift; exit 1, results are written",
            file=sys.stderr,
        )
    code = EXIT_FAILED if failed else 0
    if args.json:
        emit("coord-check", {"exit_code": code, "run_id": run_id, "spec": spec.as_dict(),
                             "csv": args.out, "db": args.db, "verdicts": verdict_rows,
                             "fits": fit_rows, "notes": result["notes"],
                             "baseline_moved": moved})  # fmt: skip
    return code
