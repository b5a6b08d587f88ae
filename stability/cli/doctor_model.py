"""``stability doctor --model``: the divergence doctor on your own network.

Everything the flags name is built and checked (one forward pass) before the store is
opened or any training runs, so bad input is one line and exit 2 with the store intact.
The tables go beside ``--out`` as the MLP doctor's do (``<stem>-layers.csv``, ...) and to the
store under records ``doctor_model`` (the verdict), ``doctor_model_layers`` and one name per
study (``doctor_model_lr_search``, ``doctor_model_loss_scaling``).
"""

import argparse
import contextlib
import math
import sys
from typing import Any

import pandas as pd

from stability.cli.args import EXIT_FAILED
from stability.cli.doctor_fp8 import check_dtype, print_fp8
from stability.cli.json_output import emit, human
from stability.errors import StabilityError
from stability.results.files import check_outputs, write_csv
from stability.results.store import Store

MLP_ONLY = ("lr_map", "cost", "figure")  # studies of the MLP's grid, not of one given model
# The built-in MLP's own flags and their defaults (the parser's): any other value with
# --model is refused, as it would be silently ignored.
MLP_DEFAULTS: dict[str, Any] = {
    "activation": "relu", "init": "kaiming_normal", "depth": 10, "width": 64, "batch": 64,
    "data": "teacher", "lrs": None,
    "map_inits": ["kaiming_normal", "xavier_normal", "standard_normal"],
    "map_activations": ["relu", "tanh"],
}  # fmt: skip
MODEL_DTYPES = ("float32", "float16", "bfloat16")  # and float8 (``doctor_fp8``)
MODEL_ONLY = {"--momentum": "momentum", "--weight-decay": "weight_decay", "--mode": "mode"}


def cmd_doctor_model(args: argparse.Namespace) -> int:
    from stability.cli.limits import MAX_STEPS
    from stability.cli.model_args import mode_of, setup_from_args
    from stability.integrations.model_doctor import (
        ModelTrainConfig,
        diagnose_model,
        loss_scaling,
        lr_search,
    )
    from stability.train.doctor import doctor_csv_path, doctor_outputs

    fp8 = check_dtype(args, MODEL_DTYPES)
    given = [f"--{k.replace('_', '-')}" for k in MLP_ONLY if getattr(args, k)]
    given += [f"--{k.replace('_', '-')}" for k, v in MLP_DEFAULTS.items() if getattr(args, k) != v]
    if given:
        raise StabilityError(f"{given[0]} works on the built-in MLP only, not with --model")
    cfg = ModelTrainConfig(args.lr, args.optimizer, args.steps, args.dtype, args.device,
                           mode_of(args), args.momentum, args.weight_decay,
                           args.recipe or "tensor")  # fmt: skip
    if cfg.steps > MAX_STEPS and not args.yes:
        raise StabilityError(f"--steps {cfg.steps} is over {MAX_STEPS}; pass --yes to run it")
    if args.trial_steps < 1:
        raise StabilityError(f"trial-steps must be >= 1, got {args.trial_steps}")
    if args.loss_scaling and cfg.dtype in ("float32", "float8"):
        raise StabilityError(
            f"--loss-scaling needs a reduced dtype; got {cfg.dtype!r}, expected one of "
            "['bfloat16', 'float16']"
        )
    if cfg.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise StabilityError(f"device {cfg.device!r} requested but CUDA is not available")
    studies = [k for k in ("lr_search", "loss_scaling") if getattr(args, k)]
    studies += ["fp8"] if fp8 else []
    outputs = doctor_outputs(args.out, None, studies)
    check_outputs(outputs, store=args.db)
    Store.open(args.db).close()  # a foreign, corrupt or read-only store: refused before training
    # One line and exit 2 on any bad flag, before any training; no --loss: a bounded one.
    setup = setup_from_args(args, bounded=True)

    with contextlib.redirect_stdout(human(args.json)):  # --json: stdout holds JSON only
        diag = diagnose_model(setup, cfg)
        print(diag.summary())
        for note in setup.batch.notes:
            print(note)
        tables = {"diagnosis": pd.DataFrame([diag.as_row()]), "layers": diag.layers}
        event = print_fp8(diag.fp8_rows, args, diag.steps_run) if fp8 else None
        if fp8:
            tables["fp8"] = pd.DataFrame(diag.fp8_rows)
        if args.lr_search:
            table = lr_search(setup, cfg, args.trial_steps)
            row = table.iloc[0]
            print(f"largest stable lr ({args.trial_steps} steps per trial): "
                  f"{row['largest_stable_lr']:.4g} (diverges at "
                  f"{row['smallest_divergent_lr']:.4g})")  # fmt: skip
            tables["lr_search"] = table
        if args.loss_scaling:
            table = loss_scaling(setup, cfg)
            tables["loss_scaling"] = table
            print(f"fraction of weight gradients that are zero in {cfg.dtype} (mean over steps):")
            grid = table.pivot(index="module", columns="loss_scaling", values="zero_grad_fraction")
            print(grid.rename(columns={False: "scaling off", True: "scaling on"}).to_string())
        names = {k: f"doctor_model_{k}" for k in tables} | {"diagnosis": "doctor_model"}
        records = {names[k]: _rows(t) for k, t in tables.items()}
        with Store.open(args.db) as store:
            run_id = store.write_records_run(
                "doctor-model", ["stability", *sys.argv[1:]], cfg.device, records
            )
        written = []
        for kind, table in tables.items():
            path = doctor_csv_path(args.out, kind)
            write_csv(table, path, "--out")
            written.append(str(path))
        print(f"tables: {', '.join(written)} (store: {args.db}, run {run_id})")
    code = EXIT_FAILED if args.fail_on_divergence and diag.status == "diverged" else 0
    if code:
        print(f"fail-on-divergence: {diag.model} diverged at step {diag.step}; exit 1, tables "
              "written", file=sys.stderr)  # fmt: skip
    if args.json:
        verdict = {k: _json_safe(v) for k, v in diag.as_row().items()}
        emit("doctor", {"exit_code": code, "run_id": run_id, "diagnosis": verdict,
                        "tables": written, "db": str(args.db),
                        **({"fp8_event": event.as_dict() if event else None}
                           if fp8 else {})})  # fmt: skip
    return code


def _rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in r.items()} for r in table.to_dict("records")]


def _json_safe(value: object) -> object:
    """inf and NaN as null (JSON has neither); everything else as it is."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
