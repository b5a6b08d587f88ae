"""The top findings of a set of sweep rows, as a few lines a person reads in a terminal.

The CSV and the store hold every number; a terminal should hold the answer: how many
configs kept their signal, which init to use per activation and dtype, and the worst
offenders with one reason each. The same pieces feed ``--json``, so a script and a person
read one judgement.
"""

from typing import Any

import numpy as np
import pandas as pd

from stability.results.tables import judged_table, offenders, recommendations
from stability.results.verdict_words import VERDICTS

MAX_RECOMMENDATIONS = 12  # lines; past this the CSV has the rest (said in the last line)
MAX_OFFENDERS = 5


def _shape(r: Any) -> str:
    mode = "" if r["precision_mode"] == "native" else f" ({r['precision_mode']})"
    return f"{r['activation']} {r['dtype']}{mode} depth {r['depth']} width {r['width']}"


def verdict_counts(judged: pd.DataFrame) -> dict[str, int]:
    """Configs per verdict (seeds averaged), every verdict named, in ``VERDICTS`` order."""
    counts = judged["verdict"].value_counts() if not judged.empty else pd.Series(dtype=int)
    return {v: int(counts.get(v, 0)) for v in VERDICTS}


def findings_lines(rows: pd.DataFrame, full_table: str) -> list[str]:
    """At most ~20 lines: verdict counts, the recommended init per activation and dtype,
    the worst offenders; ``full_table`` names where every number is."""
    judged = judged_table(rows)
    if judged.empty:
        return ["no configs to judge"]
    counts = verdict_counts(judged)
    border = int(judged["borderline"].sum())
    lines = [
        f"{len(judged)} configs (seeds averaged): "
        + ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        + (f"; {border} borderline (within 0.2 decades of the band edge)" if border else "")
    ]
    recs = recommendations(judged)
    lines.append("recommended init (keeps forward and backward variance within ±2 decades):")
    for r in recs.head(MAX_RECOMMENDATIONS).to_dict("records"):
        if r["best_init"] is None:
            lines.append(f"  {_shape(r)}: none stable; closest {r['closest']}")
            continue
        also = f" (also {r['also']})" if r["also"] else ""
        edge = ", borderline" if r["best_borderline"] else ""
        sigma = r["best_sigma_w2"]
        scale = f"σw² {sigma:.3g}" if np.isfinite(sigma) else "data-driven scale"
        lines.append(f"  {_shape(r)}: {r['best_init']} ({scale}{edge}){also}")
    if len(recs) > MAX_RECOMMENDATIONS:
        lines.append(f"  ... {len(recs) - MAX_RECOMMENDATIONS} more groups in {full_table}")
    worst = offenders(judged, MAX_OFFENDERS)
    if not worst.empty:
        lines.append("worst offenders:")
        for r in worst.to_dict("records"):
            reason = str(r["reason"])
            said = reason if reason.startswith(str(r["verdict"])) else f"{r['verdict']}: {reason}"
            lines.append(
                f"  {r['activation']}/{r['init']} depth {r['depth']} ({r['fails_in']}): {said}"
            )
    lines.append(f"every config and layer: {full_table}")
    return lines


def findings_document(rows: pd.DataFrame) -> dict[str, Any]:
    """The same judgement for scripts: counts, recommendations, offenders, every config."""
    judged = judged_table(rows)
    if judged.empty:
        return {"verdicts": verdict_counts(judged), "recommendations": [], "offenders": []}
    keep = [
        "activation", "init", "dtype", "precision_mode", "depth", "width", "batch", "seeds",
        "verdict", "fwd_log10_growth", "bwd_log10_growth", "margin", "borderline", "reason",
    ]  # fmt: skip
    return {
        "verdicts": verdict_counts(judged),
        "recommendations": recommendations(judged).to_dict("records"),
        "offenders": offenders(judged, MAX_OFFENDERS).to_dict("records"),
        "configs": judged[[c for c in keep if c in judged.columns]].to_dict("records"),
    }
