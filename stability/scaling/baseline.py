"""A user's exponents kept as a baseline, and a later check judged against it.

The file holds the spec that produced it and every judged exponent with its standard error.
A later run moved an exponent when ``|e - e_0| > z * sqrt(se^2 + se_0^2)``, ``z`` the
two-sided normal quantile at ``FALSE_ALARM`` split over every compared exponent
(Bonferroni): the same budget the verdicts use. Fail closed: an exponent the baseline has
and the run lacks counts as moved; a missing file, another schema, or a baseline of another
model, parameterisation, optimiser, lr, sizes or steps is refused (exit 2), never passed.
"""

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from stability.errors import StabilityError
from stability.scaling.fit import FALSE_ALARM

SCHEMA = "stability-coord-baseline/1"
SAME = ("model", "model_args", "param", "optimizer", "lr", "eps", "widths", "depths",
        "steps", "without", "loss", "input")  # fmt: skip
KEY = ["axis", "at", "module", "figure", "step"]


def document(spec: dict[str, Any], fits: pd.DataFrame) -> dict[str, Any]:
    """The baseline document of one run."""
    kept = fits[fits["judged"]] if len(fits) else fits
    rows = [{k: r[k] for k in KEY} | {"slope": float(r["slope"]), "se": float(r["se"])}
            for r in kept.to_dict("records")]  # fmt: skip
    return {"schema": SCHEMA, "spec": {k: spec.get(k) for k in SAME}, "exponents": rows}


def load(path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """The baseline at ``path``, refused (one line) if missing, foreign or of another check."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StabilityError(f"--baseline {str(path)!r} does not exist (write one with "
                             "--baseline-out)") from None  # fmt: skip
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StabilityError(f"--baseline {str(path)!r} is not readable JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise StabilityError(f"--baseline {str(path)!r} has schema {got!r}; expected {SCHEMA!r}")
    theirs = doc.get("spec") or {}
    for k in SAME:
        if _norm(theirs.get(k)) != _norm(spec.get(k)):
            raise StabilityError(f"--baseline {str(path)!r} is of another check: {k} "
                                 f"{theirs.get(k)!r} there, {spec.get(k)!r} here")  # fmt: skip
    if not isinstance(doc.get("exponents"), list):
        raise StabilityError(f"--baseline {str(path)!r} has no exponents list")
    return doc


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def judge(doc: dict[str, Any], fits: pd.DataFrame) -> list[str]:
    """One line per exponent that moved (or vanished); [] when all held."""
    base = doc["exponents"]
    now = {tuple(r[k] for k in KEY): r for r in (fits.to_dict("records") if len(fits) else [])}
    z = float(stats.norm.ppf(1.0 - FALSE_ALARM / (2 * max(len(base), 1))))
    moved = []
    for b in base:
        key = tuple(b[k] for k in KEY)
        r = now.get(key)
        if r is None or not math.isfinite(float(r["slope"])):
            moved.append(f"{b['module']} {b['figure']} step {b['step']} ({b['axis']} at "
                         f"{b['at']}): in the baseline, not measured now")  # fmt: skip
            continue
        tol = z * math.hypot(float(r["se"]), float(b["se"]))
        d = float(r["slope"]) - float(b["slope"])
        if not abs(d) <= tol:
            moved.append(f"{b['module']} {b['figure']} step {b['step']}: {b['axis']}^"
                         f"{float(r['slope']):.2f} now, {b['axis']}^{float(b['slope']):.2f} in "
                         f"the baseline (moved {d:+.2f}, tolerance {tol:.2f})")  # fmt: skip
    return moved
