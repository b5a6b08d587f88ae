"""``stability baseline`` and ``stability gate``: record a baseline, judge a run against it."""

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stability.cli.args import SubParsers, silence_stdout
from stability.cli.gate_model import DEFAULT_MODEL_PATH, cmd_baseline_model, cmd_gate_model
from stability.cli.json_output import stdout_to_stderr
from stability.cli.model_args import add_model_arguments
from stability.errors import StabilityError
from stability.results.files import check_outputs

if TYPE_CHECKING:
    from stability.measure.gate import Verdict


def add_baseline(sub: SubParsers) -> None:
    from stability.measure.baseline import DEFAULT_PATH

    p = sub.add_parser(
        "baseline",
        help="(re)write the gate's baseline: stability figures, efficiency, environment",
        description="Measure the fixed grid and the timed step; record who, when and why. "
        "With --model: probe your own network and record its per-module figures in a "
        f"baseline of its own (default {DEFAULT_MODEL_PATH}).",
    )
    p.add_argument("--reason", required=True, help="why the baseline changes (kept in the JSON)")
    p.add_argument(
        "--out", type=Path, default=None, help=f"baseline JSON (default: {DEFAULT_PATH})"
    )
    add_model_arguments(p, required=False)
    p.set_defaults(handler=_cmd_baseline)


def _cmd_baseline(args: argparse.Namespace) -> int:
    from stability.measure import baseline

    if args.model is not None:
        return cmd_baseline_model(args)
    out = args.out or baseline.DEFAULT_PATH
    check_outputs({"--out": out})  # never over a store or other database; before measuring
    doc = baseline.write(out, args.reason)
    eff = doc["throughput"]["efficiency"]
    print(
        f"baseline -> {out}: {len(doc['stability'])} stability cells, efficiency median "
        f"{sorted(eff)[len(eff) // 2]:.3f} over {len(eff)} rounds; by {doc['created']['by']}"
    )
    return 0


def add_gate(sub: SubParsers) -> None:
    from stability.measure.baseline import DEFAULT_PATH
    from stability.measure.gate_format import FORMATS

    p = sub.add_parser(
        "gate",
        help="judge this code against the baseline (and --against REV); exit 0 pass, "
        "1 regression, 2 cannot judge",
        description="Stability figures are judged on any machine; throughput against the "
        "baseline only on the machine that wrote it (elsewhere use --against). Fails closed: a "
        "missing, corrupt, partial or foreign baseline exits 2, never 0. The verdict goes to "
        "stdout, reasons to stderr.",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help=f"baseline JSON (default: {DEFAULT_PATH}; with --model {DEFAULT_MODEL_PATH})",
    )
    p.add_argument("--no-baseline", action="store_true", help="with --against: skip the baseline")
    p.add_argument("--no-throughput", action="store_true", help="stability figures only")
    p.add_argument(
        "--against",
        metavar="REV",
        help="also compare with REV on this machine: its figures, and the training step timed "
        "A/B/A/B; 'auto' = HEAD's first parent (skipped with one line when there is none)",
    )
    p.add_argument("--candidate", metavar="REV2", help="with --against: judge REV2, not the tree")
    p.add_argument("--pairs", type=int, default=None, help="A/B pairs for --against (default: 12)")
    p.add_argument(
        "--format", choices=FORMATS, default="text", help="verdict on stdout (default: text)"
    )
    p.add_argument(
        "--json",
        action="store_const",
        const="json",
        dest="format",
        help="the same as --format json (schema stability-gate/1), as on the other commands",
    )
    add_model_arguments(p, required=False)
    p.add_argument(
        "--rtol",
        type=float,
        default=None,
        help="with --model: relative tolerance per figure (default: the baseline's, 1e-4; "
        "docs/figure-tolerances.md)",
    )
    p.set_defaults(handler=_cmd_gate)


def _verdict(args: argparse.Namespace) -> "Verdict":
    from stability.measure import baseline as bl
    from stability.measure import gate, gate_against

    if args.candidate and not args.against:
        raise StabilityError("--candidate needs --against REV")
    if args.no_baseline and not args.against:
        raise StabilityError("--no-baseline needs --against REV (there is nothing else to judge)")
    if args.pairs is not None and not args.against:
        raise StabilityError("--pairs needs --against REV")
    pairs = gate_against.AGAINST_PAIRS if args.pairs is None else args.pairs
    if pairs < gate_against.min_pairs():
        raise StabilityError(
            f"--pairs {pairs} is too few: use {gate_against.min_pairs()} or more "
            f"(fewer samples can never reach p<0.01); default {gate_against.AGAINST_PAIRS}"
        )
    if args.rtol is not None:
        raise StabilityError("--rtol judges a --model baseline: it needs --model")
    verdict = gate.Verdict()
    if not args.no_baseline:
        path = args.baseline or bl.DEFAULT_PATH
        verdict = gate.judge_baseline(path, throughput=not args.no_throughput)
    if args.against:
        verdict.extend(
            gate_against.against(args.against, args.candidate, pairs, speed=not args.no_throughput)
        )
    return verdict


def _cmd_gate(args: argparse.Namespace) -> int:
    from stability.measure import gate, gate_format

    if args.model is not None:
        return cmd_gate_model(args)
    try:
        with stdout_to_stderr(args.format == "json"):  # stdout holds the document only
            verdict = _verdict(args)
    except StabilityError:
        raise
    except Exception as exc:
        print(f"stability gate: cannot judge: {type(exc).__name__}: {exc}", file=sys.stderr)
        return gate.CANNOT_JUDGE
    for line in gate_format.reasons(verdict):
        print(line, file=sys.stderr)
    try:
        print(gate_format.render(verdict, args.format), flush=True)
    except BrokenPipeError:  # ``| head``: the verdict stands, whoever stopped reading
        silence_stdout()
    return verdict.code
