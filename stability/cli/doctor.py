"""``stability doctor``: train briefly, diagnose the first NaN/Inf, search stable learning rates."""

import argparse
import contextlib
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from stability.cli.args import (
    EXIT_FAILED,
    SubParsers,
    add_db_argument,
    figure_path,
    floats,
    names,
    nonempty,
)
from stability.cli.doctor_fp8 import add_fp8_arguments, check_dtype, print_fp8, refuse_studies
from stability.cli.doctor_model import MLP_DEFAULTS, MODEL_ONLY, cmd_doctor_model
from stability.cli.json_output import add_json_argument, emit, human
from stability.cli.model_args import add_model_arguments
from stability.errors import StabilityError
from stability.interrupts import deferred_interrupt
from stability.results.files import check_outputs, save_figure
from stability.results.store import Store

if TYPE_CHECKING:
    from stability.train.doctor import Diagnosis, Extras
    from stability.train.trainer import TrainConfig

DEFAULT_DOCTOR_CSV = Path("results") / "doctor.csv"
MLP_DTYPES = ("float64", "float32", "bfloat16", "float16")  # and float8 (``doctor_fp8``)


def add_doctor(sub: SubParsers) -> None:
    p = sub.add_parser(
        "doctor",
        help="train an MLP (or --model: your own) briefly and diagnose its first NaN/Inf",
        description="Train one MLP for a bounded number of steps, watching every layer; at the "
        "first non-finite value report the step, layer, forward/backward and the cause. "
        "Optionally: the largest stable learning rate, a stable/divergent map over lr x init "
        "x activation, float16 with and without loss scaling, and the cost against "
        "torch.autograd.detect_anomaly. With --model, your own network is trained on --input, "
        "--target and --loss and the first NaN/Inf is named by module (qualified name), phase "
        "and operator (without --loss on a bounded objective: the model's own loss when the "
        "batch has labels, else cross_entropy for logits, else mse against a made target; in "
        "--mode eval by default, so runs repeat exactly); --lr-search and --loss-scaling work "
        "on it too. Exit codes: 0 done "
        "(diverged or not); 1 the run diverged and --fail-on-divergence was given (results "
        "are still written); 2 bad input.",
    )
    d = MLP_DEFAULTS  # the built-in MLP's flags: refused with --model when not these
    p.add_argument("--activation", default=d["activation"], help="(default: %(default)s)")
    p.add_argument("--init", default=d["init"], help="(default: %(default)s)")
    p.add_argument("--depth", type=int, default=d["depth"], help="(default: %(default)s)")
    p.add_argument("--width", type=int, default=d["width"], help="(default: %(default)s)")
    p.add_argument(
        "--dtype",
        default="float32",
        help="float64, float32, bfloat16, float16, or float8 (alias fp8, hybrid: E4M3 forward, "
        "E5M2 backward on every matmul, emulated; names the first module whose gradient "
        "overflows or flushes); with --model float32, float16, bfloat16 or float8",
    )
    add_fp8_arguments(p)
    add_model_arguments(p, required=False, training=True)  # --model ...: your own network
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (default: %(default)s)")
    p.add_argument(
        "--optimizer",
        default="sgd",
        help="sgd, momentum (sgd with momentum 0.9) or adam; with --model also adamw "
        "(default: sgd)",
    )
    p.add_argument(
        "--momentum",
        type=float,
        default=None,
        help="with --model: sgd's momentum (default: 0; 0.9 for --optimizer momentum)",
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        help="with --model: the optimiser's weight decay, decoupled for adamw (default: 0, "
        "adamw included, where torch's own default is 0.01)",
    )
    p.add_argument("--steps", type=int, default=100, help="training steps (default: 100)")
    p.add_argument("--batch", type=int, default=d["batch"], help="batch size (default: 64)")
    p.add_argument(
        "--data",
        default=d["data"],
        help="teacher, regression or classification (default: teacher)",
    )
    p.add_argument(
        "--loss-scaling",
        action="store_true",
        help="float16/bfloat16: also train with and without loss scaling; per-layer underflow",
    )
    p.add_argument("--lr-search", action="store_true", help="largest stable learning rate")
    p.add_argument("--lr-map", action="store_true", help="stable/divergent over lr x init x act")
    p.add_argument("--lrs", type=floats, default=None, help="comma list for --lr-map")
    p.add_argument(
        "--map-inits",
        type=names,
        default=d["map_inits"],
        help="comma list for --lr-map (default: %(default)s)",
    )
    p.add_argument(
        "--map-activations",
        type=names,
        default=d["map_activations"],
        help="comma list for --lr-map (default: %(default)s)",
    )
    p.add_argument(
        "--trial-steps", type=int, default=50, help="steps per lr-search/map trial (default: 50)"
    )
    p.add_argument("--cost", action="store_true", help="time the doctor against detect_anomaly")
    p.add_argument(
        "--fail-on-divergence",
        action="store_true",
        help="exit 1 if the run diverged (a NaN/Inf appeared), after writing every table; "
        "lr-search/lr-map trials do not count (default: exit 0 either way)",
    )
    add_json_argument(p, "doctor")
    p.add_argument(
        "--figure",
        type=Path,
        default=None,
        help="the lr map as a figure, in the format its extension names (.png, .svg, .pdf...)",
    )
    p.add_argument(
        "--yes",
        action="store_true",
        help="run beyond the limits on --depth, --steps and --trial-steps (see docs/exit-codes.md)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_DOCTOR_CSV,
        help="CSV of the diagnosis; other tables go beside it as <stem>-<table>.csv "
        "(default: %(default)s)",
    )
    add_db_argument(p)
    p.set_defaults(handler=_cmd_doctor)


def _cmd_doctor(args: argparse.Namespace) -> int:
    if args.model is not None:
        return cmd_doctor_model(args)
    given = [flag for flag, key in MODEL_ONLY.items() if getattr(args, key) not in (None, 0.0)]
    if given:
        raise StabilityError(f"{given[0]} works with --model only, not on the built-in MLP")
    fp8 = check_dtype(args, MLP_DTYPES)
    if fp8:
        refuse_studies(args)
    from stability.train.doctor import (
        diagnose,
        diagnosis_tables,
        extra_tables,
        write_doctor_csvs,
        write_doctor_run,
    )

    cfg, extras = _parse(args)
    tables: dict[str, pd.DataFrame] = {}
    with contextlib.redirect_stdout(human(args.json)):  # --json: stdout holds JSON only
        event = None
        if fp8:
            from stability.train.doctor.fp8 import diagnose_fp8

            diag, fp8_rows = diagnose_fp8(cfg, args.recipe)
        else:
            diag = diagnose(cfg)
        _print_diagnosis(diag)
        verdict, layers = diagnosis_tables(diag)
        tables.update(diagnosis=verdict, layers=layers)
        if fp8:
            event = print_fp8(fp8_rows, args, diag.steps_run)
            tables["fp8"] = pd.DataFrame(fp8_rows)
        for kind, table in extra_tables(cfg, extras):
            tables[kind] = table
            _PRINTERS[kind](table, args)
        with deferred_interrupt():  # Ctrl-C: every table written (store and CSVs), or none
            with Store.open(args.db) as store:  # first: a CSV that cannot be written loses nothing
                command = ["stability", *sys.argv[1:]]
                run_id = write_doctor_run(store, tables, command, args.device)
            written = write_doctor_csvs(args.out, tables)
        print(f"tables: {', '.join(map(str, written))} (store: {args.db}, run {run_id})")
    code = 0
    if args.fail_on_divergence and diag.status == "diverged":
        print(
            f"fail-on-divergence: the run diverged at step {diag.step}, {diag.where}, "
            f"{diag.phase}: {diag.kind} ({diag.mechanism}); exit 1, tables written",
            file=sys.stderr,
        )
        code = EXIT_FAILED
    if args.json:
        emit("doctor", {
            "exit_code": code, "run_id": run_id, "db": args.db, "files": written,
            "summary": diag.summary(), "diagnosis": diag.as_row(),
            **({"fp8_event": event.as_dict() if event else None} if fp8 else {}),
            "tables": {k: t.to_dict("records") for k, t in tables.items() if k != "diagnosis"},
        })  # fmt: skip
    return code


def _parse(args: argparse.Namespace) -> "tuple[TrainConfig, Extras]":
    """Validated configs from the arguments; every bad input raises before any work."""
    from stability.cli.limits import check_doctor
    from stability.core.config import MLPConfig
    from stability.train.doctor import OPTIONAL_TABLES, Extras, doctor_outputs
    from stability.train.lr_search import DEFAULT_MAP_LRS
    from stability.train.trainer import TrainConfig

    model = MLPConfig(
        depth=args.depth,
        width=args.width,
        activation=args.activation,
        init=args.init,
        dtype="float32" if args.dtype == "float8" else args.dtype,  # float8's carrier
        seed=args.seed,
        device=args.device,
    )
    cfg = TrainConfig(
        model, lr=args.lr, optimizer=args.optimizer, steps=args.steps, data=args.data,
        batch=args.batch, samples=max(512, args.batch),
    )  # fmt: skip
    if args.trial_steps < 1:
        raise StabilityError(f"trial-steps must be >= 1, got {args.trial_steps}")
    lrs = None if args.lrs is None else nonempty("--lrs", args.lrs, "learning rate")
    for lr in lrs or []:
        if not lr > 0 or lr == float("inf"):
            raise StabilityError(f"--lrs values must be finite and > 0, got {lr}")
        replace(cfg, lr=lr)  # one the weights' dtype cannot hold is refused here
    nonempty("--map-inits", args.map_inits, "init")
    nonempty("--map-activations", args.map_activations, "activation")
    if args.figure is not None and not args.lr_map:
        raise StabilityError("--figure draws the lr map: it needs --lr-map")
    check_doctor(cfg, args.trial_steps, args.yes)
    if args.loss_scaling and args.dtype not in ("float16", "bfloat16"):
        raise StabilityError(
            f"--loss-scaling needs a reduced dtype; got {args.dtype!r}, expected one of "
            "['bfloat16', 'float16']"
        )
    studies = [kind for kind in OPTIONAL_TABLES if getattr(args, kind)]  # --cost... by name
    studies += ["fp8"] if args.dtype == "float8" else []
    check_outputs(doctor_outputs(args.out, args.figure, studies), store=args.db)
    if args.figure is not None:  # a format matplotlib cannot write, after what the path is
        figure_path(args.figure)
    Store.open(args.db).close()  # refuse a foreign, corrupt or read-only store before training
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise StabilityError(f"device {args.device!r} requested but CUDA is not available")
    for name in args.map_activations if args.lr_map else []:
        MLPConfig(activation=name)
    for name in args.map_inits if args.lr_map else []:
        MLPConfig(init=name)
    extras = Extras(
        cost=args.cost, lr_search=args.lr_search, lr_map=args.lr_map,
        loss_scaling=args.loss_scaling, trial_steps=args.trial_steps,
        lrs=tuple(lrs or DEFAULT_MAP_LRS), map_inits=tuple(args.map_inits),
        map_activations=tuple(args.map_activations),
    )  # fmt: skip
    return cfg, extras


def _float(v: float) -> str:
    return f"{v:.3g}"


def _print_diagnosis(diag: "Diagnosis") -> None:
    print(diag.summary())
    if diag.status == "diverged":
        cols = ["layer", "where", "act_max_abs", "grad_max_abs", "weight_max_abs"]
        print("last finite statistics per layer:")
        print(diag.last_finite[cols].to_string(index=False, float_format=_float))


def _print_cost(table: pd.DataFrame, args: argparse.Namespace) -> None:
    cost = table.iloc[0]
    print(
        f"cost over {cost['steps']} steps: plain {cost['plain_s']:.3f} s, doctor "
        f"{cost['doctor_s']:.3f} s (of which replay {cost['replay_s']:.3f} s), detect_anomaly "
        f"{cost['anomaly_s']:.3f} s; doctor / detect_anomaly = {cost['ratio']:.3f}, watching "
        f"alone {cost['watch_ratio']:.3f} (detect_anomaly: {cost['anomaly_message']})"
    )


def _print_lr_search(table: pd.DataFrame, args: argparse.Namespace) -> None:
    row = table.iloc[0]
    print(
        f"largest stable lr ({args.trial_steps} steps per trial): "
        f"{row['largest_stable_lr']:.4g} (diverges at {row['smallest_divergent_lr']:.4g})"
    )


def _print_lr_map(table: pd.DataFrame, args: argparse.Namespace) -> None:
    from stability.train.lr_map import lr_map_grid
    from stability.train.lr_search import lr_map_figure

    grid = lr_map_grid(table, sort=True)
    grid.columns = [_float(float(c)) for c in grid.columns]
    print("lr map (ok = stable, DIV = divergent):")
    print(grid.to_string())
    if args.figure is not None:
        save_figure(lr_map_figure(table), args.figure, dpi=120, what="--figure")
        print(f"figure: {args.figure}")


def _print_loss_scaling(table: pd.DataFrame, args: argparse.Namespace) -> None:
    from stability.train.loss_scaling import scaling_runs, zero_fractions_by_layer

    print(f"fraction of gradient values that are zero in {args.dtype} (mean over steps):")
    print(zero_fractions_by_layer(table).to_string(float_format=_float))
    for _, run in scaling_runs(table).iterrows():
        state = "on " if run["loss_scaling"] else "off"
        print(
            f"  loss scaling {state}: final loss {run['final_loss']:.4g}"
            f", skipped steps {run['skipped_steps']}, final scale {run['final_scale']:g}"
        )


_PRINTERS: dict[str, Callable[[pd.DataFrame, argparse.Namespace], None]] = {
    "cost": _print_cost,
    "lr_search": _print_lr_search,
    "lr_map": _print_lr_map,
    "loss_scaling": _print_loss_scaling,
}
