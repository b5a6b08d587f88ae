"""The rules that turn a module's figures into a verdict, each by what the module does.

A module is never compared with whatever module happens to come first (the token
embedding, whose variance is its init's, 4e-4 in GPT-2). Rules, in the order they apply
(``PROBE_VERDICTS`` order; the first that fires is the module's verdict):

1. **non-finite**: an inf or NaN in its output or in the gradient arriving there.
2. **float16-overflow**: a value, forward or gradient, beyond float16's largest (65504).
3. **Growth**, by role (``usermodel.roles``):
   - ``layer``: a leaf (no submodule holds parameters) by its *gain*, the mean square of
     its output (less its own bias's) over its input's: beyond ``10^BAND`` it explodes. A
     small gain is not judged: residual branches start small on purpose (zero-init, layer
     scale, GPT-2's 0.02). A composite (attention, an MLP, a sublayer ending in a norm or
     adding a second input) is judged through its parts and the stream, not its own gain.
   - ``norm``: its output's mean square against the expected ``mean(gain^2)+mean(bias^2)``;
     more than ``NORM_TOL`` decades below means the norm divides by its eps, not by the
     signal's scale (its input is below eps): vanishes; above: explodes.
   - ``embedding``: the expectation (its table's mean square) is stated, not judged.
   - ``block``: the stream through its stack (``stream_verdicts``): its own gain beyond
     ``10^±BLOCK_BAND``, or the stream's growth since the stack's input beyond
     ``10^±BAND``, forward (mean square) or backward (gradient norm^2, from the stack's
     output down), explodes or vanishes; the first block where it happens is named. A
     block that changes the signal's shape (a downsampling stage) is a transition: its own
     gain is its projection's init, so only the stream's growth judges it.
   - ``parameter-free``, ``frozen``, ``no-gradient``: growth is not judged (rotary
     embeddings, frozen tables, a head the loss does not use).
4. **float16-underflow**: flushing to zero in float16 would remove more than ``FLUSH_LIMIT``
   of the squared norm of its output, of the gradient there, or of its own parameters'
   gradients: without loss scaling those weights get (almost) no update. The squared norm,
   not the count: any zero-centred tensor has a few values near 0, and losing them costs
   nothing. A layer scale (a tiny parameter of it or an enclosing module) is named.
   Gradients are at the probe's scale: a unit-variance gradient entering the output (the
   projection), or the named ``--loss``.
"""

import math
from collections.abc import Sequence
from typing import Any

from stability.results.verdict_words import BAND

BLOCK_BAND = 1.0  # one block multiplying its stream's mean square by 10 or more
NORM_TOL = 0.5  # decades a norm's output may sit off mean(gain^2) + mean(bias^2)
FLUSH_LIMIT = 0.01  # more than 1 % of the squared norm lost to zero: needs loss scaling
PROBE_VERDICTS = (
    "non-finite",
    "float16-overflow",
    "explodes",
    "vanishes",
    "float16-underflow",
    "stable",
)
UNJUDGED = {
    "parameter-free": "no parameters: growth not judged",
    "frozen": "frozen (no trainable parameters): no gradient by design, growth not judged",
    "no-gradient": "the loss does not reach it (no gradient): growth not judged",
}


def log10_ratio(a: float, b: float) -> float:
    """``log10(a / b)``; NaN unless both are finite and positive (0 over a positive: -inf)."""
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0 or a < 0:
        return math.nan
    return -math.inf if a == 0 else math.log10(a / b)


def _gain(r: dict[str, Any]) -> float:
    """The forward gain of a layer: output mean square less its bias's, over its input's."""
    return log10_ratio(max(r["fwd_ms"] - r.get("bias_ms", 0.0), 0.0), r["in_ms"])


def stream_verdicts(rows: Sequence[dict[str, Any]], band: float = BAND) -> dict[str, Any]:
    """Per block (by module name): ``(verdict, reason, fields)`` from its stack's stream,
    plus ``"stacks"``: one summary dict per stack for the network's verdict."""
    by_stack: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("role") == "block":
            by_stack.setdefault(r["stack"], []).append(r)
    found: dict[str, Any] = {"stacks": []}
    for stack, members in by_stack.items():
        members = sorted(members, key=lambda r: r["block_index"])
        start = members[0]["in_ms"]
        top_grad = members[-1]["bwd_sq_norm"]
        worst_fwd, worst_bwd = 0.0, 0.0
        # The stream's growth is blamed on the block where it first leaves the band: going
        # up for the forward pass, going down from the top for the gradient; the blocks
        # after that inherit it and are not named again.
        fwd_crossed = bwd_crossed = False
        for r in reversed(members):
            bgrown = log10_ratio(r["in_bwd_sq_norm"], top_grad)
            r_b = bgrown if not bwd_crossed else 0.0
            bwd_crossed = bwd_crossed or abs(bgrown) > band
            r["_bwd_judged"] = r_b
        for r in members:
            gain = log10_ratio(r["fwd_ms"], r["in_ms"])
            grown = log10_ratio(r["fwd_ms"], start)
            bgain = log10_ratio(r["in_bwd_sq_norm"], r["bwd_sq_norm"])
            bgrown = log10_ratio(r["in_bwd_sq_norm"], top_grad)
            fields = {"fwd_gain_log10": gain, "stream_log10": grown,
                      "bwd_gain_log10": bgain, "bwd_stream_log10": bgrown}  # fmt: skip
            judged_fwd = grown if not fwd_crossed else 0.0
            fwd_crossed = fwd_crossed or abs(grown) > band
            if r.get("reshapes"):  # a transition (downsampling, a wider stage): its own gain
                gain = bgain = 0.0  # is its projection's init, judged only in the stream's
            verdict = _block_verdict(gain, judged_fwd, bgain, r.pop("_bwd_judged"), band)
            found[r["module"]] = (*verdict, fields)
            worst_fwd = _further(worst_fwd, grown)
            worst_bwd = _further(worst_bwd, bgrown)
        found["stacks"].append({"stack": stack, "blocks": len(members),
                                "fwd_log10": worst_fwd, "bwd_log10": worst_bwd})  # fmt: skip
    return found


def _further(a: float, b: float) -> float:
    """The one further from 0 (NaN ignored)."""
    return b if (math.isfinite(b) and abs(b) > abs(a)) or math.isinf(b) else a


def _block_verdict(gain: float, grown: float, bgain: float, bgrown: float,
                   band: float) -> tuple[str, str]:  # fmt: skip
    checks = (
        (gain, BLOCK_BAND, "its output's mean square is 10^{v:+.1f} its input's"),
        (grown, band, "the stream's mean square is 10^{v:+.1f} the stack's input's here"),
        (bgain, BLOCK_BAND, "the gradient norm^2 at its input is 10^{v:+.1f} that at its output"),
        (bgrown, band, "the gradient norm^2 at its input is 10^{v:+.1f} that at the stack's top"),
    )
    for value, limit, text in checks:
        if value > limit:
            return "explodes", text.format(v=value)
        if value < -limit:
            return "vanishes", text.format(v=value)
    return "stable", ""


def judge(rows: Sequence[dict[str, Any]], band: float = BAND) -> list[dict[str, Any]]:
    """``rows`` (from ``probe_modules``) with ``fwd_gain_log10``, ``verdict`` and a one-line
    ``reason`` added (blocks also get their stream figures); the input is not changed."""
    streams = stream_verdicts(rows, band)
    judged = []
    for r in rows:
        out = dict(r)
        leaf_layer = r.get("role") == "layer" and r.get("leaf", True)
        out["fwd_gain_log10"] = _gain(r) if leaf_layer else math.nan
        stream = streams.get(r["module"]) if r.get("role") == "block" else None
        if stream is not None:
            out.update(stream[2])
        out["verdict"], out["reason"] = _verdict(out, stream, band)
        out["side"] = _side(out)
        judged.append(out)
    return judged


def _side(r: dict[str, Any]) -> str:
    """Whether the verdict was found in the forward pass or the backward: a problem that
    starts forward is caused where it first shows in forward order, a backward one where
    the backward pass (from the loss down) first meets it."""
    if r["verdict"] == "stable":
        return ""
    if r["verdict"] == "non-finite":
        return "forward" if r["fwd_nonfinite"] else "backward"
    reason = r["reason"]
    backward = ("gradient", "no update")
    return "backward" if any(w in reason.split(";")[0] for w in backward) else "forward"


def _verdict(r: dict[str, Any], stream: Any, band: float) -> tuple[str, str]:
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
    grown = _growth(r, stream, band)
    if grown is not None:
        return grown
    flushed = _underflow(r)
    if flushed is not None:
        return flushed
    room = min(r["fwd_f16_headroom"], r["bwd_f16_headroom"])
    note = UNJUDGED.get(r.get("role", ""), "")
    expect = _expectation_note(r)
    head = f"{room:.1f} binades of float16 headroom" if math.isfinite(room) else ""
    return "stable", "; ".join(t for t in (note, expect, head) if t)


def _growth(r: dict[str, Any], stream: Any, band: float) -> tuple[str, str] | None:
    role = r.get("role", "layer")
    if role == "layer":
        gain = r["fwd_gain_log10"]
        if gain > band:
            return "explodes", f"its output's mean square is 10^{gain:+.1f} its input's"
    elif role == "norm":
        off = log10_ratio(r["fwd_ms"], r["expected_ms"])
        if abs(off) > NORM_TOL:
            eps = r.get("norm_eps", math.nan)
            why = (
                f"; its input's mean square {r['in_ms']:.3g} is below eps {eps:.3g}"
                if off < 0 and math.isfinite(eps) and r["in_ms"] < 10 * eps
                else ""
            )
            word = "vanishes" if off < 0 else "explodes"
            return word, (
                f"output mean square {r['fwd_ms']:.3g}, expected mean(gain^2 + bias^2) = "
                f"{r['expected_ms']:.3g} (10^{off:+.1f}){why}"
            )
    elif role == "block" and stream is not None and stream[0] != "stable":
        return stream[0], stream[1]
    return None


def _underflow(r: dict[str, Any]) -> tuple[str, str] | None:
    places = (
        ("fwd_f16_flush", "output"),
        ("bwd_f16_flush", "gradient at its output"),
        ("param_grad_f16_flush", "its parameters' gradient"),
    )
    for key, what in places:
        energy = r.get(f"{key}_energy", math.nan)
        if isinstance(energy, float) and energy > FLUSH_LIMIT:
            cause = f"; {r['small_scale']} scales it" if r.get("small_scale") else ""
            lost = "no update" if key != "fwd_f16_flush" else "zeros"
            return "float16-underflow", (
                f"{r[key]:.1%} of the {what} ({energy:.1%} of its squared norm) would flush "
                f"to zero in float16{cause}: {lost} there without loss scaling"
            )
    return None


def _expectation_note(r: dict[str, Any]) -> str:
    role = r.get("role")
    if role == "norm":
        return f"output mean square {r['fwd_ms']:.3g} as expected ({r['expected_ms']:.3g})"
    if role == "embedding":
        return f"output mean square {r['fwd_ms']:.3g}, its table's {r['expected_ms']:.3g}"
    if role == "block" and math.isfinite(r.get("stream_log10", math.nan)):
        return f"stream 10^{r['stream_log10']:+.2f} of the stack's input"
    if role == "layer" and math.isfinite(r.get("fwd_gain_log10", math.nan)):
        return f"gain 10^{r['fwd_gain_log10']:+.2f}"
    return ""
