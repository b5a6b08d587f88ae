"""``stability probe --formats``: the low-precision pass of the probe command.

The flags (``--formats``, ``--recipe``, ``--sqnr-target``) are checked before anything is
written; the rows go to ``<stem>-formats.csv`` / ``.json`` beside ``--out`` and to the
store (records ``probe_formats``, with the advice as ``probe_formats_advice``), and a short
table, module by module, to stdout.
"""

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

from stability.cli.args import names
from stability.core.lowp.formats import LowpFormat, get_format
from stability.core.lowp.recipes import Recipe, get_recipe
from stability.errors import StabilityError
from stability.results.csv_records import write_records_csv
from stability.results.files import write_text
from stability.usermodel.lowp_advice import KEEP, recommend
from stability.usermodel.lowp_probe import probe_formats

DEFAULT_TARGET_DB = 20.0


def add_format_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--formats", type=names, default=None, metavar="FORMATS",
                   help="comma list of low-precision formats to emulate per matmul module "
                   "(e4m3, e5m2, hybrid, mxfp8, mxfp8_e5m2, mxfp6, mxfp4, nvfp4); rows to "
                   "<out stem>-formats.csv and a recommendation per module")  # fmt: skip
    add_recipe_arguments(p, "a module's")


def add_recipe_arguments(p: argparse.ArgumentParser, whose: str) -> None:
    """``--recipe`` and ``--sqnr-target``: shared by probe --formats and a low-precision sweep."""
    p.add_argument("--recipe", type=names, default=["tensor"], metavar="RECIPES",
                   help="comma list of fp8 scaling recipes: none, tensor, row, delayed:H"
                   "[:max|recent] (default: tensor; MX, NVFP4 carry their own scale)")  # fmt: skip
    p.add_argument("--sqnr-target", type=float, default=DEFAULT_TARGET_DB, metavar="DB",
                   help=f"SQNR in dB {whose} output and gradient must keep to leave bf16 "
                   "(default: %(default)s)")  # fmt: skip


def parse_formats(args: argparse.Namespace) -> tuple[list[LowpFormat], list[Recipe]] | None:
    """The formats and recipes asked for, or None without ``--formats``; one-line errors."""
    if args.formats is None:
        return None
    if not args.formats:
        raise StabilityError("--formats needs at least one format, e.g. e4m3,mxfp8,mxfp4")
    recipes = parse_recipes(args)
    return [get_format(n) for n in args.formats], recipes


def parse_recipes(args: argparse.Namespace) -> list[Recipe]:
    """``--recipe`` and ``--sqnr-target`` checked: one-line errors."""
    if not args.recipe:
        raise StabilityError("--recipe needs at least one recipe, e.g. tensor")
    if not math.isfinite(args.sqnr_target):
        raise StabilityError(f"--sqnr-target {args.sqnr_target} is not a finite number of dB")
    return [get_recipe(n) for n in args.recipe]


def format_paths(out: Path) -> tuple[Path, Path]:
    stem = out.with_suffix("")
    return stem.with_name(stem.name + "-formats.csv"), stem.with_name(stem.name + "-formats.json")


def run_formats(args: argparse.Namespace, run: Any, parsed: tuple[list[LowpFormat], list[Recipe]]
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """The format pass and the advice (rows, advice)."""
    formats, recipes = parsed
    rows = probe_formats(run.model, run.forward, run.loss_of, formats, recipes)
    if not rows:
        raise StabilityError("--formats: the model has no matmul module (Linear, Conv1D, Conv)")
    return rows, recommend(rows, args.sqnr_target)


def write_formats(out: Path, context: dict[str, Any], rows: list[dict[str, Any]],
                  advice: list[dict[str, Any]]) -> tuple[Path, Path]:  # fmt: skip
    csv_path, json_path = format_paths(out)
    write_records_csv([{**context, **r} for r in rows], csv_path, "--out")
    body = {**context, "advice": advice, "rows": rows}
    write_text(json_path, json.dumps(body, default=str) + "\n", "JSON file")
    return csv_path, json_path


def print_advice(advice: list[dict[str, Any]], target: float, text: TextIO) -> None:
    width = max(len(a["module"]) for a in advice)
    print(f"low precision (target {target:g} dB):", file=text)
    for a in advice:
        line = f"  {a['module']:<{width}}  {a['recommendation']:<22} {a['sqnr_db']:6.1f} dB"
        print(line + (f"  ({a['reason']})" if a["reason"] else ""), file=text)


def report_keep_bf16(advice: list[dict[str, Any]], fail_on: list[str]) -> int:
    """One stderr line per module kept in bf16 when ``--fail-on keep-bf16``; how many."""
    if KEEP not in fail_on:
        return 0
    kept = [a for a in advice if a["verdict"] == KEEP]
    for a in kept:
        print(f"fail-on: {a['module']} ({a['kind']}): {KEEP}: {a['reason']}", file=sys.stderr)
    return len(kept)
