"""``stability baseline`` and ``stability gate``: record a baseline, judge a run against it."""

import argparse
from pathlib import Path

from stability.cli.args import SubParsers
from stability.errors import StabilityError
from stability.store import writable_path


def add_baseline(sub: SubParsers) -> None:
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


def add_gate(sub: SubParsers) -> None:
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
    p.add_argument("--against", metavar="REV", help="time REV and the working tree A/B/A/B instead")
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
