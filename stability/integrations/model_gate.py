"""A baseline of the user's own model, and the gate that judges a later run against it.

``record`` probes the model once (``usermodel.probe``: one forward and backward pass, every
default module) and keeps, per module, the figures that move when its numerics change:
forward and backward variance and max |x|. ``judge`` probes again and compares each figure
with ``|now - base| <= rtol * |base|``. The rtol is the gate's cross-machine figure rtol for
float32 (``measure.gate.FIGURE_RTOL``, 1e-4, derived in docs/figure-tolerances.md: the
largest spread between machines of the probe's float32 figures, 1.5e-6, times a margin of
100); the baseline records the rtol it was written with, and ``--rtol`` may override it.

It fails closed, like the MLP gate: a baseline that is missing, unreadable, of another
schema or another model, or whose modules are not the model's, cannot be judged (exit 2,
never a pass); exit 1 means a figure moved past the rtol (or became non-finite). The flags
are compared by meaning (``normal_flags``). A regression is named where it began: the
first module in forward order whose own forward figures moved (``origin``), then the
figures that follow from it, forward and backward, one line each (``regression_lines``).
"""

import contextlib
import getpass
import json
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stability.errors import StabilityError
from stability.measure.gate import CANNOT_JUDGE, FIGURE_RTOL, PASS, REGRESSION
from stability.results.files import write_text
from stability.usermodel.probe import probe_modules
from stability.usermodel.spec import UserSetup

SCHEMA = "stability-model-baseline/1"
FIGURES = ("fwd_var", "fwd_max_abs", "bwd_var", "bwd_max_abs")
DEFAULT_RTOL = FIGURE_RTOL["float32"]
FOLLOWERS_SHOWN = 4  # names on a "follows from" line; the rows hold every one


def _figures_and_order(setup: UserSetup) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Per module its figures, and its forward order (of its first output)."""
    rows = probe_modules(setup.model, setup.forward, setup.loss_of)
    figures = {str(r["module"]): {k: float(r[k]) for k in FIGURES} for r in rows}
    return figures, {str(r["module"]): int(r["order"]) for r in rows}


def _figures(setup: UserSetup) -> dict[str, dict[str, float]]:
    return _figures_and_order(setup)[0]


def record(setup: UserSetup, flags: Mapping[str, Any], reason: str, path: Path) -> dict[str, Any]:
    """Probe the model and write its baseline JSON (atomically); the document."""
    figures = _figures(setup)
    doc = {
        "schema": SCHEMA,
        "model": dict(flags),
        "rtol": DEFAULT_RTOL,
        "created": {
            "by": _who(),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "reason": reason,
        },
        "modules": {m: {k: _json_number(v) for k, v in f.items()} for m, f in figures.items()},
    }
    write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n", "--out")
    return doc


def _who() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (OSError, KeyError):
        return "unknown"


def _json_number(v: float) -> float | str:
    return v if math.isfinite(v) else str(v)  # JSON has no inf/NaN: kept as "inf"/"nan"


def load(path: Path) -> dict[str, Any]:
    """The baseline document, checked; any problem is one line (exit 2)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StabilityError(f"model baseline {str(path)!r} not found; record one with "
                             "'stability baseline --model ...'") from None  # fmt: skip
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StabilityError(f"model baseline {str(path)!r} is not readable JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise StabilityError(
            f"model baseline {str(path)!r} has schema {found!r}, expected {SCHEMA!r} (the "
            "MLP's baseline is judged without --model)"
        )
    modules, rtol = doc.get("modules"), doc.get("rtol")
    if not isinstance(modules, dict) or not modules or not isinstance(doc.get("model"), dict):
        raise StabilityError(f"model baseline {str(path)!r} lacks its 'model' or 'modules'")
    if not (isinstance(rtol, int | float) and not isinstance(rtol, bool) and 0 < rtol < 1):
        raise StabilityError(
            f"model baseline {str(path)!r} has rtol {rtol!r}; expected 0 < rtol < 1"
        )
    for name, figs in modules.items():
        if not isinstance(figs, dict) or set(figs) != set(FIGURES):
            raise StabilityError(f"model baseline {str(path)!r}: module {name!r} must hold "
                                 f"{list(FIGURES)}")  # fmt: skip
        for key, v in figs.items():
            if not ((isinstance(v, int | float) and not isinstance(v, bool))
                    or v in ("inf", "-inf", "nan")):  # fmt: skip
                raise StabilityError(f"model baseline {str(path)!r}: {name}.{key} is {v!r}, "
                                     "not a number")  # fmt: skip
    return doc


@dataclass
class ModelVerdict:
    """Each figure's judgement; ``code`` is 0 pass, 1 regression, 2 cannot judge."""

    code: int = PASS
    lines: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)


def normal_flags(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The flags by meaning: ``--model-args`` JSON parsed and dumped with sorted keys (so
    ``'{"seed": 0}'`` is ``'{"seed":0}'``), an ``--input``/``--target`` that is a file path
    resolved; everything else as given. Applied to both sides, so a baseline written
    before this normalisation is judged too."""
    out = dict(flags)
    text = out.get("model_args")
    if isinstance(text, str) and text.strip():
        # Not JSON: compared as written (the gate's own flags were checked when parsed).
        with contextlib.suppress(json.JSONDecodeError):
            out["model_args"] = json.dumps(json.loads(text), sort_keys=True)
    elif not text:
        out["model_args"] = None
    for key in ("input", "target"):
        value = out.get(key)
        if isinstance(value, str) and value and os.path.exists(value):
            out[key] = str(Path(value).resolve())
    return out


def same_model(recorded: Mapping[str, Any], flags: Mapping[str, Any]) -> bool:
    """Whether the baseline's flags name the model the gate's do; a baseline from before
    ``--mode`` has no mode to compare (the caller probes it as it was: as built)."""
    base, now = normal_flags(recorded), normal_flags(flags)
    if "mode" not in base:
        now.pop("mode", None)
    return base == now


def judge(doc: Mapping[str, Any], setup: UserSetup, flags: Mapping[str, Any],
          rtol: float | None = None) -> ModelVerdict:  # fmt: skip
    """Probe the model again and judge every figure against the baseline ``doc``; the lines
    name first where the change began (``origin``), then what follows from it."""
    rtol = float(doc["rtol"]) if rtol is None else rtol
    verdict = ModelVerdict()
    if not same_model(doc["model"], flags):
        verdict.code = CANNOT_JUDGE
        verdict.lines.append(f"the baseline was recorded for {json.dumps(doc['model'])}, not "
                             f"{json.dumps(dict(flags))}")  # fmt: skip
        return verdict
    now, order = _figures_and_order(setup)
    base: dict[str, dict[str, Any]] = doc["modules"]
    if set(now) != set(base):
        missing, new = sorted(set(base) - set(now)), sorted(set(now) - set(base))
        verdict.code = CANNOT_JUDGE
        verdict.lines.append(f"the model's modules differ from the baseline's: missing "
                             f"{missing[:5]}, new {new[:5]}; record a new baseline")  # fmt: skip
        return verdict
    for module in sorted(base, key=order.__getitem__):
        for key in FIGURES:
            b, n = float(base[module][key]), now[module][key]
            ok = _rel(n, b) <= rtol
            verdict.rows.append({"module": module, "order": order[module], "figure": key,
                                 "baseline": b, "now": n, "rel_change": _rel(n, b),
                                 "rtol": rtol, "ok": ok, "follows_from": None})  # fmt: skip
    failed = [r for r in verdict.rows if not r["ok"]]
    if failed:
        verdict.code = REGRESSION
        verdict.lines.extend(regression_lines(failed))
    return verdict


def origin(failed: list[dict[str, Any]]) -> str:
    """Where a change began: the first module in forward order whose own forward figures
    moved (hooks fire as a module exits, so a changed leaf precedes its parents); with only
    gradients moved, the last module in forward order (the first the backward pass meets)."""
    forward = [r for r in failed if r["figure"].startswith("fwd")]
    if forward:
        return str(min(forward, key=lambda r: r["order"])["module"])
    return str(max(failed, key=lambda r: r["order"])["module"])


def regression_lines(failed: list[dict[str, Any]], shown: int = FOLLOWERS_SHOWN) -> list[str]:
    """``REGRESSION`` lines for the origin's own forward figures (or its gradient figures,
    when only gradients moved), then the rest grouped as following from it: the forward
    consequences (modules after it) on one line, the backward (gradient figures) on another."""
    first = origin(failed)
    own_kind = "fwd" if any(r["figure"].startswith("fwd") for r in failed) else "bwd"
    lines = []
    rest: dict[str, list[dict[str, Any]]] = {"fwd": [], "bwd": []}
    for r in failed:
        if r["module"] == first and r["figure"].startswith(own_kind):
            lines.append(f"REGRESSION {r['module']} {r['figure']}: {r['baseline']:.6g} -> "
                         f"{r['now']:.6g} (relative change {r['rel_change']:.3g} > rtol "
                         f"{r['rtol']:g})")  # fmt: skip
        else:
            r["follows_from"] = first
            rest[r["figure"][:3]].append(r)
    for kind, what in (("fwd", "forward, modules after it"), ("bwd", "backward, gradients")):
        moved = rest[kind]
        if not moved:
            continue
        modules = list(dict.fromkeys(str(r["module"]) for r in moved))
        more = f", ... {len(modules) - shown} more" if len(modules) > shown else ""
        lines.append(f"  follows from {first}: {what}: {len(moved)} figures in {len(modules)} "
                     f"modules ({', '.join(modules[:shown])}{more})")  # fmt: skip
    return lines


def _rel(n: float, b: float) -> float:
    """|n - b| / |b|: 0 when equal (NaN and NaN too), inf when either is not finite."""
    if n == b or (math.isnan(n) and math.isnan(b)):
        return 0.0
    if not (math.isfinite(n) and math.isfinite(b)) or b == 0:
        return math.inf
    return abs(n - b) / abs(b)
