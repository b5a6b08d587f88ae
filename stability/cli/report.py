"""``stability report``: run what is missing and write the self-contained HTML page."""

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stability.cli.args import EXIT_INTERRUPTED, SubParsers, add_db_argument
from stability.cli.json_output import add_json_argument, emit, human, stdout_to_stderr
from stability.errors import StabilityError

if TYPE_CHECKING:
    from stability.report.build import BuildResult

DEFAULT_REPORT = Path("reports") / "index.html"


def add_report(sub: SubParsers) -> None:
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
        help="about 2 minutes cold on 2 quiet cores, seconds cached: one seed in the sweep, "
        "properties (dev) without 'slow' ones, benchmarks' train/forward steps at two "
        "batches; reuses a full run",
    )
    p.add_argument(
        "--no-run", action="store_true", help="compute nothing: render from the store only"
    )
    add_db_argument(p)
    p.add_argument("--jobs", type=int, default=None, help="sweep worker processes (default: cores)")
    add_json_argument(p, "report")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from stability.report import build  # matplotlib and jinja2 load only for this command

    if args.jobs is not None and args.jobs < 1:
        raise StabilityError(f"jobs must be >= 1, got {args.jobs}")
    if args.out.suffix.lower() not in (".html", ".htm"):
        raise StabilityError(f"--out must name an .html file, got {str(args.out)!r}")
    argv = sys.argv[1:] if sys.argv[1:2] == ["report"] else ["report"]
    try:
        with stdout_to_stderr(args.json):  # --json: stdout holds the document only
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
    code = 1 if result.failed else 0
    text = human(args.json)
    health: dict[str, int] = {}
    for section in result.sections:
        health[section.health] = health.get(section.health, 0) + 1
    counts = ", ".join(f"{n} {h}" for h, n in health.items())
    print(f"report: {result.path} ({result.bytes / 1e6:.2f} MB, {len(result.csv_files)} CSV files)",
          file=text)  # fmt: skip
    print(f"state: {result.state} (sections: {counts})", file=text)
    for section in result.sections:
        if section.health in ("warn", "fail"):
            print(f"  {section.health}: {section.title}: {section.reason}", file=text)
    print(f"verdict: {result.headline}", file=text)
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)
    if args.json:
        emit("report", _json_body(result, code))
    return code


def _json_body(result: "BuildResult", code: int) -> dict[str, object]:
    """What ``--json`` prints: the page's state, every section's health, the files."""
    return {
        "exit_code": code,
        "path": result.path,
        "bytes": result.bytes,
        "state": result.state,
        "headline": result.headline,
        "sections": [
            {
                "title": s.title,
                "health": s.health,
                "reason": s.reason,
                "status": s.status,
                "verdict": s.verdict,
            }
            for s in result.sections
        ],
        "steps": [
            {"name": st.name, "status": st.status, "detail": st.detail} for st in result.steps
        ],
        "csv_files": result.csv_files,
        "errors": result.errors,
        "seconds": result.seconds,
    }
