"""``stability probe``: one forward and backward pass of your own model, module by module.

Rows (one per watched module, by qualified name) go to a CSV, a JSON file and the store
(records ``probe``, which the report's "Your model" section draws); the verdict and the top
findings go to stdout. Everything the flags name is built and checked before the store is
opened, so bad input leaves the store as it was.
"""

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from stability.cli.args import EXIT_FAILED, SubParsers, add_db_argument, names
from stability.cli.json_output import add_json_argument, document, emit, human
from stability.cli.model_args import add_model_arguments, mode_line, mode_of, setup_from_args
from stability.cli.probe_formats import (
    add_format_arguments,
    parse_formats,
    print_advice,
    report_keep_bf16,
    run_formats,
    write_formats,
)
from stability.core.registry import lookup
from stability.errors import StabilityError
from stability.results.files import check_outputs, write_csv, write_text
from stability.results.store import Store
from stability.usermodel.findings import PROBE_VERDICTS, finding_lines, judge, summary
from stability.usermodel.lowp_advice import FORMAT_VERDICTS
from stability.usermodel.probe import probe_modules
from stability.usermodel.roles import mode_notes

DEFAULT_PROBE_CSV = Path("results") / "probe.csv"
MAX_FAIL_LINES = 10  # once one module is non-finite every later one is: the CSV has the rest


def add_probe(sub: SubParsers) -> None:
    p = sub.add_parser(
        "probe",
        help="probe your own torch model module by module (variance, float16 headroom)",
        description="Build your model (--model pkg.module:factory), run one forward and "
        "backward pass of --input, and report per module (by qualified name) the forward "
        "and gradient variance, max |x|, float16/bfloat16 headroom and the fractions that "
        "would go subnormal or flush, with a verdict. Exit codes: 0 done; 1 a module got a "
        "--fail-on verdict (results are still written); 2 bad input.",
    )
    add_model_arguments(p)
    p.add_argument(
        "--modules",
        type=names,
        default=None,
        metavar="GLOBS",
        help="comma list of globs on qualified names ('layers.*.attn*', '<model>' for the "
        "whole model); default: modules with parameters, composite blocks and your own modules",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_PROBE_CSV,
        help="CSV of the rows; a JSON file (rows and summary) is written beside it with the "
        "suffix .json (default: %(default)s)",
    )
    add_db_argument(p)
    p.add_argument(
        "--fail-on",
        type=names,
        default=None,
        metavar="VERDICTS",
        help="comma list from "
        + ",".join(PROBE_VERDICTS + FORMAT_VERDICTS)
        + ": after writing the results, "
        "name each module with one of them on stderr and exit 1",
    )
    add_format_arguments(p)
    add_json_argument(p, "probe")
    p.set_defaults(handler=_cmd_probe)


def _cmd_probe(args: argparse.Namespace) -> int:
    fail_on = _verdicts(args.fail_on, PROBE_VERDICTS + FORMAT_VERDICTS)
    lowp = parse_formats(args)
    json_path = args.out.with_suffix(".json")
    check_outputs({"--out": args.out, "JSON file": json_path}, store=args.db)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise StabilityError(f"device {args.device!r} requested but CUDA is not available")
    setup = setup_from_args(args)  # one line and exit 2 on any bad flag, before any write
    run = setup.to(args.device)
    with contextlib.redirect_stdout(human(args.json)):  # the model's prints: not on --json
        lowp_rows, advice = run_formats(args, run, lowp) if lowp else ([], [])
        rows = judge(probe_modules(run.model, run.forward, run.loss_of, args.modules))
    context = {"model": args.model, "input": args.input, "loss": args.loss or "projection",
               "mode": mode_of(args)}  # fmt: skip
    stored = [{**context, **r} for r in rows]
    found = summary(rows)
    with Store.open(args.db) as store:
        run_id = store.write_records_run(
            "probe",
            ["stability", *sys.argv[1:]],
            args.device,
            {
                "probe": stored,
                "probe_formats": [{**context, **r} for r in lowp_rows],
                "probe_formats_advice": [{**context, **a} for a in advice],
            },
        )
    write_csv(pd.DataFrame(stored), args.out, "--out")
    body = {"run_id": run_id, **context, "objective": setup.objective,
            "batch_notes": list(setup.batch.notes),
            "mode_notes": mode_notes(setup.model, mode_of(args)),
            "summary": found, "rows": stored}  # fmt: skip
    write_text(json_path, json.dumps(document("probe", body), allow_nan=False) + "\n", "JSON file")
    text = human(args.json)
    print("\n".join(finding_lines(rows)), file=text)
    notes = [*setup.batch.notes, *mode_notes(setup.model, mode_of(args))]
    for line in [mode_line(mode_of(args)), f"objective: {setup.objective}", *notes]:
        print(line, file=text)
    print(
        f"rows: {len(rows)} -> {args.out}, {json_path} (store: {args.db}, run {run_id})", file=text
    )
    if lowp:
        paths = write_formats(args.out, {"run_id": run_id, **context}, lowp_rows, advice)
        print_advice(advice, args.sqnr_target, text)
        print(f"formats: {len(lowp_rows)} rows -> {paths[0]}, {paths[1]}", file=text)
    flagged = _report_fail_on(rows, fail_on) + report_keep_bf16(advice, fail_on)
    code = EXIT_FAILED if flagged else 0
    if args.json:
        where = {"csv": args.out, "json": json_path, "db": args.db}
        asked = {"verdicts": fail_on, "flagged_modules": flagged}
        emit("probe", {"exit_code": code, **where, "fail_on": asked, **body})
    return code


def _verdicts(given: list[str] | None, choices: tuple[str, ...]) -> list[str]:
    """``--fail-on``'s names, each a probe verdict; [] without the flag."""
    if given is None:
        return []
    if not given:
        raise StabilityError(
            f"--fail-on needs at least one verdict; expected some of {sorted(choices)}"
        )
    return [lookup("verdict", name, {v: v for v in choices}) for name in given]


def _report_fail_on(rows: list[dict[str, Any]], fail_on: list[str]) -> int:
    """One stderr line per module whose verdict is in ``fail_on``; how many there were."""
    flagged = [r for r in rows if r["verdict"] in fail_on]
    if len(flagged) > MAX_FAIL_LINES:
        print(f"fail-on: the first {MAX_FAIL_LINES} in forward order:", file=sys.stderr)
    for r in flagged[:MAX_FAIL_LINES]:
        print(
            f"fail-on: {r['module']} ({r['kind']}): {r['verdict']}: {r['reason']}", file=sys.stderr
        )
    if flagged:
        print(
            f"fail-on: {len(flagged)} of {len(rows)} modules got a verdict in --fail-on "
            f"{','.join(fail_on)}; exit 1, results are written",
            file=sys.stderr,
        )
    return len(flagged)
