"""The network's verdict from its modules' (``usermodel.verdicts``), and the few findings
worth reading first.

The words are the sweep's (non-finite, explodes, vanishes, stable) plus two that only a
per-module probe gives: ``float16-overflow`` and ``float16-underflow``. The network's
verdict is the worst of its modules'; the signal path (each stack's stream, forward and
backward) is summarised on its own line, so a reader sees what the verdict was judged on.
"""

import math
from collections.abc import Sequence
from typing import Any

from stability.usermodel.verdicts import (
    BLOCK_BAND,
    FLUSH_LIMIT,
    PROBE_VERDICTS,
    judge,
    log10_ratio,
)

__all__ = ["BLOCK_BAND", "FLUSH_LIMIT", "PROBE_VERDICTS", "finding_lines", "judge", "summary"]


def _stacks(judged: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per stack: blocks, the stream's largest growth forward and backward, the roles."""
    stacks: dict[str, list[dict[str, Any]]] = {}
    for r in judged:
        if r.get("role") == "block":
            stacks.setdefault(r["stack"], []).append(r)
    out = []
    for name, members in stacks.items():
        members = sorted(members, key=lambda r: r["block_index"])
        fwd = log10_ratio(members[-1]["fwd_ms"], members[0]["in_ms"])
        # The gradient at the stack's input, else (the model's own input, which needs no
        # gradient) at its first block's output.
        first = members[0]["in_bwd_sq_norm"]
        first = first if math.isfinite(first) else members[0]["bwd_sq_norm"]
        bwd = log10_ratio(first, members[-1]["bwd_sq_norm"])
        gains = [r.get("fwd_gain_log10", math.nan) for r in members]
        finite = [g for g in gains if math.isfinite(g)]
        largest = max(finite, key=abs) if finite else math.nan
        out.append({"stack": name, "blocks": len(members), "kind": members[0]["kind"],
                    "fwd_log10": fwd, "bwd_log10": bwd,
                    "max_block_gain_log10": largest})  # fmt: skip
    return out


def summary(judged: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The network's verdict (the worst of its modules'), counts per verdict, and the
    modules at the extremes: least float16 headroom, largest growth, most flushed."""
    counts = {v: 0 for v in PROBE_VERDICTS}
    for r in judged:
        counts[r["verdict"]] += 1
    worst = next((v for v in PROBE_VERDICTS if counts[v]), "stable")
    out: dict[str, Any] = {
        "modules": len(judged),
        "verdict": worst,
        "counts": {v: n for v, n in counts.items() if n},
    }
    if not judged:
        return out
    # Once a value is inf or NaN everything after it is too: the cause is the first module
    # in forward order whose output holds one (else the last in order whose gradient does,
    # the first the backward pass reached).
    forward_bad = [r for r in judged if r["fwd_nonfinite"]]
    backward_bad = [r for r in judged if r["bwd_nonfinite"]]
    if forward_bad:
        out["first_nonfinite"] = {"module": forward_bad[0]["module"], "phase": "forward"}
    elif backward_bad:
        out["first_nonfinite"] = {"module": backward_bad[-1]["module"], "phase": "backward"}

    def pick(key: str, lowest: bool) -> dict[str, Any]:
        finite = [r for r in judged if isinstance(r[key], int | float) and not math.isnan(r[key])]
        if not finite:
            return {}
        r = (min if lowest else max)(finite, key=lambda r: r[key])
        return {"module": r["module"], "value": r[key]}

    out["least_f16_headroom_fwd"] = pick("fwd_f16_headroom", lowest=True)
    out["least_f16_headroom_bwd"] = pick("bwd_f16_headroom", lowest=True)
    out["largest_layer_gain"] = pick("fwd_gain_log10", lowest=False)
    out["most_f16_flush_bwd"] = pick("bwd_f16_flush", lowest=False)
    out["stacks"] = _stacks(judged)
    origin = _origin(judged)
    if origin is not None:
        out["origin"] = origin
    out["roles"] = {}
    for r in judged:
        role = r.get("role", "layer")
        out["roles"][role] = out["roles"].get(role, 0) + 1
    return out


def _origin(judged: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Where the trouble starts: the first module in forward order flagged on its forward
    figures, else the last flagged on its gradient (the first the backward pass meets);
    with the block (stack member) it sits in, the place a planted fault is."""
    flagged = [r for r in judged if r["verdict"] != "stable"]
    forward = [r for r in flagged if r.get("side") == "forward"]
    backward = [r for r in flagged if r.get("side") == "backward"]
    if forward:
        r = min(forward, key=lambda r: r["order"])
    elif backward:
        r = max(backward, key=lambda r: r["order"])
    else:
        return None
    blocks = [b["module"] for b in judged if b.get("role") == "block"]
    inside = [b for b in blocks if r["module"] == b or r["module"].startswith(b + ".")]
    block = max(inside, key=len) if inside else ""
    return {"module": r["module"], "kind": r["kind"], "verdict": r["verdict"],
            "side": r.get("side", ""), "reason": r["reason"], "block": block,
            "follows": len(flagged) - 1}  # fmt: skip


def finding_lines(judged: Sequence[dict[str, Any]], top: int = 5) -> list[str]:
    """Readable lines for stdout: the verdict, then the modules that are not stable (the
    worst verdicts first, at most ``top``), then the extremes."""
    s = summary(judged)
    counts = ", ".join(f"{v} {n}" for v, n in s["counts"].items())
    lines = [f"verdict: {s['verdict']} ({s['modules']} modules: {counts})"]
    for st in s.get("stacks", []):
        lines.append(
            f"signal path {st['stack']} ({st['blocks']} x {st['kind']}): mean square "
            f"10^{st['fwd_log10']:+.2f} across the stack (largest per block "
            f"10^{st['max_block_gain_log10']:+.2f}), gradient norm^2 10^{st['bwd_log10']:+.2f} "
            "from its top to its input"
        )
    if not s.get("stacks"):
        lines.append("signal path: no repeated blocks found; each module judged by its own gain")
    unjudged = {k: v for k, v in s.get("roles", {}).items()
                if k in ("parameter-free", "frozen", "no-gradient")}  # fmt: skip
    if unjudged:
        lines.append("not judged for growth: " + ", ".join(f"{n} {k}" for k, n in unjudged.items()))
    first = s.get("first_nonfinite")
    if first:
        lines.append(f"first inf/NaN: {first['module']} ({first['phase']}); all after it follow")
    origin = s.get("origin")
    if origin:
        where = f" in block {origin['block']}" if origin["block"] else ""
        follows = f"; {origin['follows']} other flagged modules follow" if origin["follows"] else ""
        lines.append(f"starts at: {origin['module']} ({origin['kind']}){where}, "
                     f"{origin['side']}: {origin['verdict']}{follows}")  # fmt: skip
    start = origin["module"] if origin else None
    flagged = sorted(
        (r for r in judged if r["verdict"] != "stable"),
        key=lambda r: (
            r["module"] != start,
            PROBE_VERDICTS.index(r["verdict"]),
            not r["fwd_nonfinite"],
            r["order"],
        ),
    )
    shown = 0
    causes: dict[tuple[str, str], list[str]] = {}  # one layer scale behind many modules
    for r in flagged:
        cause = (r["verdict"], r.get("small_scale", "")) if r.get("small_scale") else None
        if cause is not None and cause in causes:
            causes[cause].append(r["module"])
            continue
        if cause is not None:
            causes[cause] = []
        if shown < top:
            lines.append(f"  {r['verdict']:<17} {r['module']} ({r['kind']}): {r['reason']}")
        shown += 1
    for (verdict, scale), more in causes.items():
        if more:
            names = ", ".join(more[:3]) + (", ..." if len(more) > 3 else "")
            lines.append(f"  ... {len(more)} more {verdict} with the same cause ({scale}): {names}")
    if shown > top:
        lines.append(f"  ... and {shown - top} more (see the CSV)")
    for key, text in (
        ("least_f16_headroom_fwd", "least float16 headroom, forward: {v:.1f} binades"),
        ("least_f16_headroom_bwd", "least float16 headroom, gradient: {v:.1f} binades"),
        ("largest_layer_gain", "largest gain (mean square out / in): 10^{v:+.2f}"),
    ):
        found = s.get(key)
        if found and math.isfinite(found["value"]):
            lines.append(f"{text.format(v=found['value'])} at {found['module']}")
    return lines
