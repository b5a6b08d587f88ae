"""Read the property suite's junit XML into one row per property, paired with its witness.

pytest writes one ``testcase`` per test (per parameter); hypothesis, run with
``--hypothesis-show-statistics``, adds a base64 ``hypothesis-statistics-<nodeid>`` property
per test, from which the number of examples run is read. A property ``test_<claim>`` and its
witness ``test_witness_<claim>`` live in the same file; the chapter is that file's module
constant ``CHAPTER`` (read with ``ast``, never imported), else the file name.
"""

import ast
import base64
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from stability.errors import StabilityError

WITNESS_PREFIX = "test_witness_"
_EXAMPLES = re.compile(
    r"(\d+) passing(?: examples?)?, (\d+) failing(?: examples?)?,? (?:and )?(\d+) invalid"
)
_RESULT_ORDER = {"error": 0, "failed": 1, "passed": 2, "skipped": 3}


@dataclass(frozen=True)
class Case:
    """One junit testcase."""

    file: str  # path relative to the pytest root, e.g. properties/test_losses.py
    name: str  # test function name without parameters
    param: str | None
    result: str  # passed, failed, error, skipped
    message: str
    seconds: float
    examples: int | None  # hypothesis examples run (passing + failing), None if not hypothesis


def _file_of(classname: str) -> str:
    # "properties.test_x" or "properties.test_x.TestClass" -> "properties/test_x.py"
    parts = classname.split(".")
    while len(parts) > 1 and not parts[-1].startswith("test"):
        parts.pop()
    if len(parts) > 1 and parts[-1][:1].isupper():
        parts.pop()
    return "/".join(parts) + ".py"


def _statistics(root: ET.Element) -> dict[str, int]:
    """nodeid -> examples run, from hypothesis' junit properties."""
    out: dict[str, int] = {}
    for prop in root.iter("property"):
        name = prop.get("name", "")
        if not name.startswith("hypothesis-statistics-"):
            continue
        try:
            text = base64.b64decode(prop.get("value", "")).decode("utf-8", "replace")
        except ValueError:
            continue
        runs = [int(p) + int(f) for p, f, _ in _EXAMPLES.findall(text)]
        if runs:
            out[name.removeprefix("hypothesis-statistics-")] = sum(runs)
    return out


def read_junit(path: Path) -> list[Case]:
    """Every testcase in a junit XML file; raises StabilityError on an unreadable file."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise StabilityError(f"cannot read junit XML {str(path)!r}: {exc}") from None
    stats = _statistics(root)
    cases = []
    for case in root.iter("testcase"):
        classname = case.get("classname", "")
        full = case.get("name", "")
        name, _, param = full.partition("[")
        result, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                result = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                lines = (child.get("message") or "").strip().splitlines()
                message = lines[0] if lines else ""
                break
        file = _file_of(classname) if classname else "?"
        cases.append(
            Case(
                file=file,
                name=name,
                param=param.rstrip("]") or None,
                result=result,
                message=message,
                seconds=float(case.get("time") or 0.0),
                examples=stats.get(f"{file}::{full}"),
            )
        )
    return cases


def chapter_of(root: Path, file: str) -> str:
    """The file's ``CHAPTER`` constant, else a title made from its name."""
    path = root / file
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        tree = None
    if tree is not None:
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "CHAPTER" for t in node.targets)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                return node.value.value
    stem = Path(file).stem.removeprefix("test_")
    return stem.replace("_", " ").capitalize() + " (from the file name)"


def _combine(results: list[str]) -> str:
    return min(results, key=lambda r: _RESULT_ORDER.get(r, 0)) if results else "missing"


def property_table(cases: list[Case], root: Path) -> pd.DataFrame:
    """One row per property (parameters folded), with its chapter and its witness's result."""
    frame = pd.DataFrame([c.__dict__ for c in cases])
    if frame.empty:
        return frame
    rows = []
    chapters: dict[str, str] = {}
    groups = [((str(k[0]), str(k[1])), g) for k, g in frame.groupby(["file", "name"], sort=False)]
    witnesses = {
        (f, n.removeprefix(WITNESS_PREFIX)): g
        for (f, n), g in groups
        if n.startswith(WITNESS_PREFIX)
    }
    claims = {(f, n.removeprefix("test_")) for (f, n), _ in groups}
    for (file, name), g in groups:
        if name.startswith(WITNESS_PREFIX):
            continue
        chapter = chapters.setdefault(file, chapter_of(root, file))
        claim = name.removeprefix("test_")
        witness = witnesses.get((file, claim))
        examples = g["examples"].dropna()
        failing = g[g["result"].isin(["failed", "error"])]
        rows.append(
            {
                "chapter": chapter,
                "file": file,
                "property": name,
                "result": _combine(list(g["result"])),
                "cases": len(g),
                "examples run": int(examples.sum()) if len(examples) else None,
                "witness": "missing" if witness is None else _combine(list(witness["result"])),
                "seconds": round(float(g["seconds"].sum()), 2),
                "message": failing["message"].iloc[0] if len(failing) else "",
            }
        )
    # Witnesses whose property is missing are defects too: list them.
    for (file, claim), g in witnesses.items():
        if (file, claim) not in claims:
            rows.append(
                {
                    "chapter": chapters.setdefault(file, chapter_of(root, file)),
                    "file": file,
                    "property": f"test_{claim} (missing; only its witness ran)",
                    "result": "missing",
                    "cases": 0,
                    "examples run": None,
                    "witness": _combine(list(g["result"])),
                    "seconds": round(float(g["seconds"].sum()), 2),
                    "message": "",
                }
            )
    table = pd.DataFrame(rows)
    table["examples run"] = table["examples run"].astype("Int64")
    return table.sort_values(["chapter", "file", "property"], kind="stable").reset_index(drop=True)
