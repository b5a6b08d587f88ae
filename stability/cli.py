"""The ``stability`` command line. Bad input: one line on stderr and exit code 2."""

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from stability.errors import StabilityError
from stability.store import DEFAULT_DB, Store, writable_path
from stability.sweep import DEFAULT_ACTIVATIONS, DEFAULT_INITS, Progress, SweepGrid, run_sweep
from stability.tables import summary_table

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEFAULT_SWEEP_CSV = Path("results") / "sweep.csv"


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    out = []
    for t in _names(text):
        try:
            out.append(int(t))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{t!r} is not an integer") from None
    return out


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so every error takes the same one-line path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise StabilityError(message)


def _add_sweep(sub: "argparse._SubParsersAction[_Parser]") -> None:
    p = sub.add_parser(
        "sweep",
        help="probe a grid of MLPs layer by layer; rows go to the store and a CSV",
        description="Probe every (activation, init, depth, width, dtype, seed, batch) cell.",
    )
    p.add_argument(
        "--activation",
        type=_names,
        default=list(DEFAULT_ACTIVATIONS),
        help="comma list (default: %(default)s)",
    )
    p.add_argument(
        "--init", type=_names, default=list(DEFAULT_INITS), help="comma list (default: %(default)s)"
    )
    p.add_argument("--depth", type=_ints, default=[50], help="comma list (default: 50)")
    p.add_argument("--width", type=_ints, default=[256], help="comma list (default: 256)")
    p.add_argument(
        "--dtype",
        type=_names,
        default=["float32", "float16"],
        help="comma list of float64,float32,bfloat16,float16 (default: float32,float16)",
    )
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="comma list (default: 0,1,2)")
    p.add_argument("--batch", type=_ints, default=[256], help="comma list, >= 2 (default: 256)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default: 1)")
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
    p.add_argument(
        "--db", type=Path, default=DEFAULT_DB, help="SQLite results store (default: %(default)s)"
    )
    p.add_argument("--resume", action="store_true", help="skip cells already in the store")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary table")
    p.set_defaults(handler=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise StabilityError(f"jobs must be >= 1, got {args.jobs}")
    if args.scheduler is not None:  # fail before any work if the dask extra is missing
        from stability.distributed import import_distributed

        import_distributed()
    grid = SweepGrid(
        activations=args.activation,
        inits=args.init,
        depths=args.depth,
        widths=args.width,
        dtypes=args.dtype,
        seeds=args.seeds,
        batches=args.batch,
        device=args.device,
    )
    cells = grid.cells()  # validates every name and size before any work
    out = writable_path(args.out, "output file")
    if args.device.startswith("cuda") and args.scheduler is None:  # else the workers need CUDA
        import torch

        if not torch.cuda.is_available():
            raise StabilityError(f"device {args.device!r} requested but CUDA is not available")
    with Store.open(args.db) as store:
        progress = Progress(len(cells), enabled=None if not args.quiet else False)
        try:
            summary = run_sweep(
                grid,
                store,
                ["stability", *sys.argv[1:]],
                args.jobs,
                args.resume,
                progress,
                scheduler=args.scheduler,
            )
        except KeyboardInterrupt:
            print(
                f"\ninterrupted: completed cells are kept in {store.path}; "
                "rerun with --resume to finish",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        rows = store.sweep_rows(c.key for c in cells)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out, index=False)
    if not args.quiet and not rows.empty:
        with pd.option_context("display.width", 160, "display.max_rows", 500):
            print(summary_table(rows).to_string(index=False))
    print(summary.line())
    print(f"rows: {len(rows)} -> {out} (store: {args.db})")
    for failure in summary.failures[:5]:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if summary.failed else 0


DEFAULT_REPORT = Path("reports") / "index.html"


def _add_report(sub: "argparse._SubParsersAction[_Parser]") -> None:
    p = sub.add_parser(
        "report",
        help="run what is missing (sweep, properties, benchmarks) and write the HTML report",
        description="Run the default sweep, the property suite (ci profile) and the quick "
        "benchmarks where the store lacks them for this code and environment, then write one "
        "self-contained HTML page plus a CSV per table beside it.",
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_REPORT, help="HTML file to write (default: %(default)s)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="one seed in the sweep, properties without 'slow' ones",
    )
    p.add_argument(
        "--no-run", action="store_true", help="compute nothing: render from the store only"
    )
    p.add_argument(
        "--db", type=Path, default=DEFAULT_DB, help="SQLite results store (default: %(default)s)"
    )
    p.add_argument("--jobs", type=int, default=None, help="sweep worker processes (default: cores)")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from stability.report import build  # matplotlib and jinja2 load only for this command

    if args.jobs is not None and args.jobs < 1:
        raise StabilityError(f"jobs must be >= 1, got {args.jobs}")
    if args.out.suffix.lower() not in (".html", ".htm"):
        raise StabilityError(f"--out must name an .html file, got {str(args.out)!r}")
    argv = sys.argv[1:] if sys.argv[1:2] == ["report"] else ["report"]
    try:
        result = build(
            args.out,
            args.db,
            Path.cwd(),
            quick=args.quick,
            no_run=args.no_run,
            jobs=args.jobs,
            command=" ".join(["stability", *argv]),
        )
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished work is kept in {args.db}; rerun to go on", file=sys.stderr)
        return EXIT_INTERRUPTED
    counts: dict[str, int] = {}
    for section in result.sections:
        counts[section.status] = counts.get(section.status, 0) + 1
    states = ", ".join(f"{n} {status}" for status, n in counts.items())
    print(f"report: {result.path} ({result.bytes / 1e6:.2f} MB, {len(result.csv_files)} CSV files)")
    print(f"sections: {states}")
    print(f"verdict: {result.headline}")
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if result.failed else 0


DEFAULT_DOCTOR_CSV = Path("results") / "doctor.csv"


def _floats(text: str) -> list[float]:
    out = []
    for t in _names(text):
        try:
            out.append(float(t))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{t!r} is not a number") from None
    return out


def _add_doctor(sub: "argparse._SubParsersAction[_Parser]") -> None:
    p = sub.add_parser(
        "doctor",
        help="train an MLP briefly and diagnose its first NaN/Inf (step, layer, cause)",
        description="Train one MLP for a bounded number of steps, watching every layer; at the "
        "first non-finite value report the step, layer, forward/backward and the cause. "
        "Optionally: the largest stable learning rate, a stable/divergent map over lr x init "
        "x activation, float16 with and without loss scaling, and the cost against "
        "torch.autograd.detect_anomaly.",
    )
    p.add_argument("--activation", default="relu", help="(default: %(default)s)")
    p.add_argument("--init", default="kaiming_normal", help="(default: %(default)s)")
    p.add_argument("--depth", type=int, default=10, help="(default: %(default)s)")
    p.add_argument("--width", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--dtype", default="float32", help="float64,float32,bfloat16,float16")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (default: %(default)s)")
    p.add_argument("--optimizer", default="sgd", help="sgd, momentum or adam (default: sgd)")
    p.add_argument("--steps", type=int, default=100, help="training steps (default: 100)")
    p.add_argument("--batch", type=int, default=64, help="batch size (default: 64)")
    p.add_argument(
        "--data", default="teacher", help="teacher, regression or classification (default: teacher)"
    )
    p.add_argument(
        "--loss-scaling",
        action="store_true",
        help="float16/bfloat16: also train with and without loss scaling; per-layer underflow",
    )
    p.add_argument("--lr-search", action="store_true", help="largest stable learning rate")
    p.add_argument("--lr-map", action="store_true", help="stable/divergent over lr x init x act")
    p.add_argument("--lrs", type=_floats, default=None, help="comma list for --lr-map")
    p.add_argument(
        "--map-inits",
        type=_names,
        default=["kaiming_normal", "xavier_normal", "standard_normal"],
        help="comma list for --lr-map (default: %(default)s)",
    )
    p.add_argument(
        "--map-activations",
        type=_names,
        default=["relu", "tanh"],
        help="comma list for --lr-map (default: %(default)s)",
    )
    p.add_argument(
        "--trial-steps", type=int, default=50, help="steps per lr-search/map trial (default: 50)"
    )
    p.add_argument("--cost", action="store_true", help="time the doctor against detect_anomaly")
    p.add_argument("--figure", type=Path, default=None, help="PNG of the lr map")
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_DOCTOR_CSV,
        help="CSV of the diagnosis; other tables go beside it as <stem>_<table>.csv "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--db", type=Path, default=DEFAULT_DB, help="SQLite results store (default: %(default)s)"
    )
    p.set_defaults(handler=_cmd_doctor)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from stability.config import MLPConfig
    from stability.doctor import compare_cost, diagnose, diagnosis_tables
    from stability.training import TrainConfig

    model = MLPConfig(
        depth=args.depth,
        width=args.width,
        activation=args.activation,
        init=args.init,
        dtype=args.dtype,
        seed=args.seed,
        device=args.device,
    )
    cfg = TrainConfig(
        model, lr=args.lr, optimizer=args.optimizer, steps=args.steps, data=args.data,
        batch=args.batch, samples=max(512, args.batch),
    )  # fmt: skip
    if args.trial_steps < 1:
        raise StabilityError(f"trial-steps must be >= 1, got {args.trial_steps}")
    if args.loss_scaling and args.dtype not in ("float16", "bfloat16"):
        raise StabilityError(
            f"--loss-scaling needs a reduced dtype; got {args.dtype!r}, expected one of "
            "['bfloat16', 'float16']"
        )
    out = writable_path(args.out, "output file")
    Store.open(args.db).close()  # refuse a foreign or corrupt database before any work
    if args.figure is not None:
        writable_path(args.figure, "figure file")
    if args.lrs is not None:
        for lr in args.lrs:
            if not lr > 0 or lr == float("inf"):
                raise StabilityError(f"--lrs values must be finite and > 0, got {lr}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise StabilityError(f"device {args.device!r} requested but CUDA is not available")
    for name in args.map_activations if args.lr_map else []:
        MLPConfig(activation=name)
    for name in args.map_inits if args.lr_map else []:
        MLPConfig(init=name)

    diag = diagnose(cfg)
    print(diag.summary())
    verdict, layers = diagnosis_tables(diag)
    tables: dict[str, pd.DataFrame] = {"diagnosis": verdict, "layers": layers}
    if diag.status == "diverged":
        cols = ["layer", "where", "act_max_abs", "grad_max_abs", "weight_max_abs"]
        print("last finite statistics per layer:")
        print(diag.last_finite[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.cost:
        cost = compare_cost(cfg)
        tables["cost"] = pd.DataFrame([{**cfg.as_dict(), **cost.as_dict()}])
        print(
            f"cost over {cost.steps} steps: plain {cost.plain_s:.3f} s, doctor {cost.doctor_s:.3f}"
            f" s (of which replay {cost.replay_s:.3f} s), detect_anomaly {cost.anomaly_s:.3f} s;"
            f" doctor / detect_anomaly = {cost.ratio:.3f}, watching alone {cost.watch_ratio:.3f}"
            f" (detect_anomaly: {cost.anomaly_message})"
        )
    if args.lr_search:
        from stability.lr_search import lr_search_grid

        search = lr_search_grid([cfg], steps=args.trial_steps, start=args.lr)
        tables["lr_search"] = search
        row = search.iloc[0]
        print(
            f"largest stable lr ({args.trial_steps} steps per trial): "
            f"{row['largest_stable_lr']:.4g} (diverges at {row['smallest_divergent_lr']:.4g})"
        )
    if args.lr_map:
        from stability.lr_search import DEFAULT_MAP_LRS, lr_map, lr_map_figure

        table = lr_map(
            replace(cfg, steps=args.trial_steps),
            lrs=args.lrs or list(DEFAULT_MAP_LRS),
            inits=args.map_inits,
            activations=args.map_activations,
        )
        tables["lr_map"] = table
        grid = table.assign(cell=table["stable"].map({True: "ok", False: "DIV"})).pivot_table(
            index=["activation", "init"], columns="lr", values="cell", aggfunc="first"
        )
        grid.columns = [f"{c:.3g}" for c in grid.columns]
        print("lr map (ok = stable, DIV = divergent):")
        print(grid.to_string())
        if args.figure is not None:
            args.figure.parent.mkdir(parents=True, exist_ok=True)
            lr_map_figure(table).savefig(args.figure, dpi=120)
            print(f"figure: {args.figure}")
    if args.loss_scaling:
        from stability.loss_scaling import compare_loss_scaling

        ls = compare_loss_scaling(cfg)
        tables["loss_scaling"] = ls
        flush_cols = ["act_grad_zero_frac", "weight_grad_zero_frac"]
        wide = pd.concat(
            [
                part.set_index("layer")[flush_cols].add_suffix("_scaled" if on else "_unscaled")
                for on, part in ls.groupby("loss_scaling")
            ],
            axis=1,
        )
        print(f"fraction of gradient values that are zero in {args.dtype} (mean over steps):")
        print(wide.to_string(float_format=lambda v: f"{v:.3g}"))
        for scaling, part in ls.groupby("loss_scaling"):
            first = part.iloc[0]
            state = "on " if scaling else "off"
            print(
                f"  loss scaling {state}: final loss {first['final_loss']:.4g}"
                f", skipped steps {first['skipped_steps']}, final scale {first['final_scale']:g}"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    verdict.to_csv(out, index=False)
    written = [str(out)]
    for kind, table in tables.items():
        if kind != "diagnosis":
            path = out.with_name(f"{out.stem}_{kind}.csv")
            table.to_csv(path, index=False)
            written.append(str(path))
    with Store.open(args.db) as store:
        run_id = store.start_run("doctor", ["stability", *sys.argv[1:]], args.device)
        for kind, table in tables.items():
            records = [{str(k): v for k, v in r.items()} for r in table.to_dict("records")]
            store.write_doctor(run_id, kind, records)
    print(f"tables: {', '.join(written)} (store: {args.db}, run {run_id})")
    return 0


def _add_bench_ingest(sub: "argparse._SubParsersAction[_Parser]") -> None:
    p = sub.add_parser(
        "bench-ingest",
        help="store a pytest-benchmark JSON (stats + extra_info) in the results store",
        description="Write every benchmark of a pytest-benchmark JSON under a new bench run.",
    )
    p.add_argument("json", type=Path, help="pytest-benchmark JSON (--benchmark-json output)")
    p.add_argument(
        "--db", type=Path, default=DEFAULT_DB, help="SQLite results store (default: %(default)s)"
    )
    p.set_defaults(handler=_cmd_bench_ingest)


def _cmd_bench_ingest(args: argparse.Namespace) -> int:
    from stability.bench import ingest

    with Store.open(args.db) as store:
        run_id = ingest(args.json, store, ["stability", *sys.argv[1:]])
        count = int((store.bench_results()["run_id"] == run_id).sum())
    print(f"bench run {run_id}: {count} results from {args.json} (store: {args.db})")
    return 0


def _add_baseline(sub: "argparse._SubParsersAction[_Parser]") -> None:
    from stability.baseline import DEFAULT_PATH

    p = sub.add_parser(
        "baseline",
        help="(re)write the gate's baseline: stability figures, efficiency, environment",
        description="Measure the fixed grid and the timed step; record who, when and why.",
    )
    p.add_argument("--reason", required=True, help="why the baseline changes (kept in the JSON)")
    p.add_argument(
        "--out", type=Path, default=DEFAULT_PATH, help="baseline JSON (default: %(default)s)"
    )
    p.set_defaults(handler=_cmd_baseline)


def _cmd_baseline(args: argparse.Namespace) -> int:
    from stability import baseline

    out = writable_path(args.out, "baseline file")
    doc = baseline.write(out, args.reason)
    eff = doc["throughput"]["efficiency"]
    print(
        f"baseline -> {out}: {len(doc['stability'])} stability cells, efficiency median "
        f"{sorted(eff)[len(eff) // 2]:.3f} over {len(eff)} rounds; by {doc['created']['by']}"
    )
    return 0


def _add_gate(sub: "argparse._SubParsersAction[_Parser]") -> None:
    from stability.baseline import DEFAULT_PATH

    p = sub.add_parser(
        "gate",
        help="compare with the baseline (or --against REV); exit 0 pass, 1 regression, 2 cannot"
        " judge",
        description="Fail closed: a missing, corrupt or foreign baseline exits 2, never 0.",
    )
    p.add_argument(
        "--baseline", type=Path, default=DEFAULT_PATH, help="baseline JSON (default: %(default)s)"
    )
    p.add_argument("--no-throughput", action="store_true", help="stability figures only")
    p.add_argument(
        "--against", metavar="REV", help="time REV and the working tree A/B/A/B instead"
    )
    p.add_argument("--candidate", metavar="REV", help="with --against: time REV2, not the tree")
    p.add_argument("--pairs", type=int, default=None, help="A/B pairs for --against")
    p.set_defaults(handler=_cmd_gate)


def _cmd_gate(args: argparse.Namespace) -> int:
    from stability import gate

    if args.against:
        pairs = args.pairs or gate.AGAINST_PAIRS
        if pairs < 2:
            raise StabilityError(f"pairs must be >= 2, got {pairs}")
        verdict = gate.against(args.against, args.candidate, pairs)
    else:
        if args.candidate:
            raise StabilityError("--candidate needs --against REV")
        verdict = gate.gate(args.baseline, throughput=not args.no_throughput)
    print(verdict.table())
    return verdict.code


COMMANDS: list[Callable[["argparse._SubParsersAction[_Parser]"], None]] = [
    _add_sweep,
    _add_report,
    _add_doctor,
    _add_bench_ingest,
    _add_baseline,
    _add_gate,
]


def build_parser() -> _Parser:
    parser = _Parser(prog="stability", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns the exit code (0 ok, 1 failures/regressions, 2 bad input)."""
    try:
        args = build_parser().parse_args(argv)
        code: int = args.handler(args)
        return code
    except StabilityError as exc:
        print(f"stability: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
