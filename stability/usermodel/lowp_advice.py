"""The answer per module: the cheapest low-precision format and recipe that keeps its SQNR.

"Cheapest" is fewest bits per stored element, the block scale shared out (MXFP4 4.25 <
NVFP4 4.5 < MXFP6 6.25 < fp8 8 < MXFP8 8.25), then the simplest recipe (none < tensor <
delayed < row < a block scale), then the higher SQNR. A candidate qualifies when the module's
output SQNR (float64 from quantised operands against float64 from exact ones) and its
gradient's SQNR both reach the target and nothing overflows; a module with none keeps
bf16, and the reason names the best candidate and, where one stands out, the outlier.
"""

import math
from collections import defaultdict
from typing import Any

from stability.core.lowp.recipes import SIMPLICITY

FORMAT_VERDICTS = ("keep-bf16",)
KEEP = "keep-bf16"
OUTLIER_CREST = 20.0  # amax / rms: a Gaussian of a million values stays near 5


def _simplicity(recipe: str) -> int:
    return SIMPLICITY["block" if recipe.startswith("block") else recipe.split(":")[0]]


def _worst_crest(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    crests = [r for r in rows if math.isfinite(r["crest"])]
    return max(crests, key=lambda r: r["crest"]) if crests else None


def recommend(rows: list[dict[str, Any]], target: float) -> list[dict[str, Any]]:
    """One dict per module (forward order): recommendation, verdict, SQNR and reason."""
    by_module: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_module[r["module"]].append(r)
    out = []
    for module, mrows in sorted(by_module.items(), key=lambda kv: kv[1][0]["order"]):
        cases: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
        for r in mrows:
            cases[(r["format"], r["recipe"])][r["tensor"]] = r
        scored = []
        for (fmt, recipe), t in cases.items():
            sqnr = t["output"]["sqnr_db"]
            grad = t["grad"]["sqnr_db"] if "grad" in t else math.inf
            over = max(r["overflow_frac"] for r in t.values())
            ok = sqnr >= target and (grad >= target or math.isnan(grad)) and over == 0
            cost = (t["output"]["bits_per_element"], _simplicity(recipe), -sqnr)
            scored.append((ok, cost, fmt, recipe, sqnr, grad, over, t))
        good = sorted((s for s in scored if s[0]), key=lambda s: s[1])
        base = {"order": mrows[0]["order"], "module": module, "kind": mrows[0]["kind"]}
        if good:
            _, _, fmt, recipe, sqnr, grad, _, _ = good[0]
            out.append({**base, "verdict": "low-precision", "recommendation": f"{fmt} {recipe}",
                        "sqnr_db": sqnr, "grad_sqnr_db": grad, "reason": ""})  # fmt: skip
            continue
        best = max(scored, key=lambda s: (s[6] == 0, min(s[4], s[5])))
        _, _, fmt, recipe, sqnr, grad, over, t = best
        if over > 0:
            where = max(t.values(), key=lambda r: r["overflow_frac"])
            why = (f"overflow: {over:.2%} of its {where['tensor']} beyond "
                   f"{where['element']}'s max under {fmt} {recipe}")  # fmt: skip
        else:
            low = "output" if sqnr <= grad else "gradient"
            why = f"best {fmt} {recipe}: {low} SQNR {min(sqnr, grad):.1f} dB < {target:g} dB"
        crest = _worst_crest(list(t.values()))
        if crest is not None and crest["crest"] > OUTLIER_CREST:
            why += f"; outliers: amax/rms = {crest['crest']:.0f} in {module} {crest['tensor']}"
        out.append({**base, "verdict": KEEP, "recommendation": KEEP, "sqnr_db": sqnr,
                    "grad_sqnr_db": grad, "reason": why})  # fmt: skip
    return out
