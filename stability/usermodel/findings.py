"""A verdict per module of a user's network, and the few findings worth reading first.

The words are the sweep's (``results.tables.VERDICTS``: non-finite, explodes, vanishes,
stable) plus two that only a per-module probe can give: ``float16-overflow`` (some value
beyond float16's largest finite, 65504) and ``float16-underflow`` (more than
``FLUSH_LIMIT`` of the values, forward or gradient, would flush to zero in float16).

Growth is read against the network's own ends, as the sweep reads layer 1 against the last:
forward variance per element against the first watched module's (the input is often integer
token ids, whose variance means nothing); the gradient's squared norm against that of the
last watched module in forward order (the one nearest the loss). The gradient is judged by
its norm, not its per-element variance, because shapes change on the way down: a global
average pool over 256 pixels divides each pixel's gradient by 256 (2.4 decades per element)
but the norm only by 16, and an orthogonal map keeps the norm exactly. Beyond ``BAND``
decades either way: explodes or vanishes. A module whose every output lies in [0, 1] (a
softmax, a sigmoid gate) outputs probabilities, whose variance is no scale: its forward
variance is not judged. The first verdict that applies, in ``PROBE_VERDICTS`` order, is
the module's.
"""

import math
from collections.abc import Sequence
from typing import Any

from stability.results.tables import BAND

FLUSH_LIMIT = 0.01  # more than 1 % of values lost to zero: float16 would need loss scaling
PROBE_VERDICTS = (
    "non-finite",
    "float16-overflow",
    "explodes",
    "vanishes",
    "float16-underflow",
    "stable",
)


def _log10_ratio(a: float, b: float) -> float:
    if not (a > 0 and b > 0) or math.isinf(a) or math.isinf(b):
        return math.nan if (math.isnan(a) or math.isnan(b)) else (-math.inf if a == 0 else math.inf)
    return math.log10(a / b)


def judge(rows: Sequence[dict[str, Any]], band: float = BAND) -> list[dict[str, Any]]:
    """``rows`` (from ``probe_modules``) with ``fwd_log10_growth``, ``bwd_log10_growth``,
    ``verdict`` and a one-line ``reason`` added; the input rows are not changed."""
    if not rows:
        return []
    fwd_ref = next((r["fwd_var"] for r in rows if r["fwd_var"] > 0), math.nan)
    bwd_ref = next((r["bwd_sq_norm"] for r in reversed(rows) if r["bwd_sq_norm"] > 0), math.nan)
    judged = []
    for r in rows:
        out = dict(r)
        fwd = _log10_ratio(r["fwd_var"], fwd_ref)
        bwd = _log10_ratio(r["bwd_sq_norm"], bwd_ref)
        out["fwd_log10_growth"] = fwd
        out["bwd_log10_growth"] = bwd
        out["verdict"], out["reason"] = _verdict(r, fwd, bwd, band)
        judged.append(out)
    return judged


def _verdict(r: dict[str, Any], fwd: float, bwd: float, band: float) -> tuple[str, str]:
    if r["fwd_nonfinite"] or r["bwd_nonfinite"]:
        return "non-finite", (
            f"inf/NaN values: {r['fwd_nonfinite']} in the output, {r['bwd_nonfinite']} in "
            "its gradient"
        )
    for side in ("fwd", "bwd"):
        room = r[f"{side}_f16_headroom"]
        if room < 0:
            what = "output" if side == "fwd" else "gradient"
            return "float16-overflow", (
                f"{what} max |x| {r[f'{side}_max_abs']:.3g} is {-room:.1f} binades past "
                "float16's 65504"
            )
    if r["fwd_min"] >= 0 and r["fwd_max_abs"] <= 1:
        fwd = 0.0  # probabilities: a small variance is what they are, not a vanishing signal
    for side, growth in (("forward variance", fwd), ("gradient norm^2", bwd)):
        if growth > band:
            return "explodes", f"{side} 10^{growth:+.1f} of the network's end"
        if growth < -band:
            return "vanishes", f"{side} 10^{growth:+.1f} of the network's end"
    for side in ("fwd", "bwd"):
        flush = r[f"{side}_f16_flush"]
        if flush > FLUSH_LIMIT:
            what = "output" if side == "fwd" else "gradient"
            return "float16-underflow", f"{flush:.1%} of the {what} would flush to zero in float16"
    room = min(r["fwd_f16_headroom"], r["bwd_f16_headroom"])
    return "stable", f"{room:.1f} binades of float16 headroom" if math.isfinite(room) else ""


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
    out["largest_fwd_growth"] = pick("fwd_log10_growth", lowest=False)
    out["smallest_bwd_growth"] = pick("bwd_log10_growth", lowest=True)
    out["most_f16_flush_bwd"] = pick("bwd_f16_flush", lowest=False)
    return out


def finding_lines(judged: Sequence[dict[str, Any]], top: int = 5) -> list[str]:
    """Readable lines for stdout: the verdict, then the modules that are not stable (the
    worst verdicts first, at most ``top``), then the extremes."""
    s = summary(judged)
    counts = ", ".join(f"{v} {n}" for v, n in s["counts"].items())
    lines = [f"verdict: {s['verdict']} ({s['modules']} modules: {counts})"]
    first = s.get("first_nonfinite")
    if first:
        lines.append(f"first inf/NaN: {first['module']} ({first['phase']}); all after it follow")
    flagged = sorted(
        (r for r in judged if r["verdict"] != "stable"),
        key=lambda r: (PROBE_VERDICTS.index(r["verdict"]), not r["fwd_nonfinite"], r["order"]),
    )
    for r in flagged[:top]:
        lines.append(f"  {r['verdict']:<17} {r['module']} ({r['kind']}): {r['reason']}")
    if len(flagged) > top:
        lines.append(f"  ... and {len(flagged) - top} more (see the CSV)")
    for key, text in (
        ("least_f16_headroom_fwd", "least float16 headroom, forward: {v:.1f} binades"),
        ("least_f16_headroom_bwd", "least float16 headroom, gradient: {v:.1f} binades"),
        ("largest_fwd_growth", "largest forward variance growth: 10^{v:+.2f}"),
        ("smallest_bwd_growth", "smallest gradient norm^2: 10^{v:+.2f} of the top's"),
    ):
        found = s.get(key)
        if found and math.isfinite(found["value"]):
            lines.append(f"{text.format(v=found['value'])} at {found['module']}")
    return lines
