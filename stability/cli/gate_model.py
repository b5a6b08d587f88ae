"""``stability baseline --model`` / ``stability gate --model``: your own model's figures.

The baseline is a JSON of its own (``DEFAULT_MODEL_PATH``), apart from the MLP's, whose
gate is untouched. The gate fails closed: bad flags, a missing or foreign baseline, or a
model whose modules changed exit 2; a figure past the rtol exits 1; otherwise 0.
"""

import argparse
import sys
from pathlib import Path
from typing import Any

from stability.errors import StabilityError
from stability.results.files import check_outputs

DEFAULT_MODEL_PATH = Path("model-baseline.json")
MLP_ONLY_GATE = ("against", "candidate", "pairs", "no_baseline", "no_throughput")


def _flags(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """What names the model in the baseline, by meaning (``normal_flags``): the same flags
    must name it at the gate."""
    from stability.integrations.model_gate import normal_flags

    return normal_flags({"model": args.model, "model_args": args.model_args,
                         "input": args.input, "target": args.target, "loss": args.loss,
                         "seed": args.seed, "mode": mode})  # fmt: skip


def cmd_baseline_model(args: argparse.Namespace) -> int:
    from stability.cli.model_args import mode_line, mode_of, setup_from_args
    from stability.integrations.model_gate import record

    out = args.out or DEFAULT_MODEL_PATH
    check_outputs({"--out": out})
    setup = setup_from_args(args)  # one line and exit 2 on bad flags, before writing
    doc = record(setup, _flags(args, mode_of(args)), args.reason, out)
    print(mode_line(mode_of(args)))
    print(f"model baseline -> {out}: {len(doc['modules'])} modules x 4 figures, rtol "
          f"{doc['rtol']:g}; by {doc['created']['by']}")  # fmt: skip
    return 0


def cmd_gate_model(args: argparse.Namespace) -> int:
    from stability.cli.model_args import mode_line, mode_of, setup_from_args
    from stability.integrations.model_gate import judge, load
    from stability.usermodel.spec import AS_BUILT

    given = [f"--{k.replace('_', '-')}" for k in MLP_ONLY_GATE if getattr(args, k)]
    if given:
        raise StabilityError(f"{given[0]} judges the built-in MLP only, not with --model")
    if args.rtol is not None and not 0 < args.rtol < 1:
        raise StabilityError(f"--rtol must be in (0, 1), got {args.rtol}")
    doc = load(args.baseline or DEFAULT_MODEL_PATH)
    mode = mode_of(args)
    if "mode" not in doc["model"] and args.mode is None:
        mode = AS_BUILT  # a baseline from before --mode: probed as the factory left the model
        print("the baseline predates --mode: the model is probed as its factory left it, as "
              "the baseline was", file=sys.stderr)  # fmt: skip
    setup = setup_from_args(args, mode=mode)
    print(mode_line(mode), file=sys.stderr)
    verdict = judge(doc, setup, _flags(args, mode), args.rtol)
    for line in verdict.lines:
        print(line, file=sys.stderr)
    words = {0: "PASS", 1: "REGRESSION", 2: "CANNOT JUDGE"}
    judged = len(verdict.rows)
    if args.format == "json":  # stdout holds the document only, as for the MLP's gate
        from stability.cli.json_output import emit

        body = {
            "exit_code": verdict.code,
            "verdict": words[verdict.code].lower().replace(" ", "-"),
            "model": args.model,
            "baseline": str(args.baseline or DEFAULT_MODEL_PATH),
            "judged": judged,
            "checks": verdict.rows,
            "notes": verdict.lines,
        }
        emit("gate", body)
        return verdict.code
    print(f"gate --model {args.model}: {words[verdict.code]} ({judged} figures judged)")
    return verdict.code
