"""11. Your model: the newest ``stability probe`` of a user's own network, module by module.

The rows are the store's ``probe`` records (``ReportData.latest("probe")``), written by
``stability probe --model pkg.module:factory``; nothing is computed here.
"""

from typing import Any

import pandas as pd

from stability.report.figures_usermodel import module_profile
from stability.report.inputs import ReportData
from stability.report.sections.figure_cache import cached_figure
from stability.report.sections.page import Section, Table
from stability.usermodel.findings import summary

TITLE = "11. Your model"
INTRO = (
    "Your own network, probed module by module: one forward and one backward pass, each "
    "row named by the module's qualified name. Each module is judged by its role: a norm "
    "against its gain, a leaf layer by its own gain, a repeated block by the stream "
    "through its stack (docs/verdicts.md). The forward and gradient variance show "
    "where scale grows or fades (a residual stream grows with depth, a LayerNorm resets it "
    "to 1); the headroom says how many binades each module's largest value sits below "
    "float16's and bfloat16's overflow, and the flush fractions how much of it would round "
    "to zero."
)
NOT_RUN = (
    "No probe of your model in the store: run `stability probe --model pkg.module:factory "
    "--input 32x64:float32` (try `--model examples.transformer:build --input "
    "examples.transformer:make_batch --loss cross_entropy`), then the report again."
)
SOURCE = "Probe run {run_id}: --model {model}, --input {input}, loss {loss}; {modules} modules."
ALT = (
    "Per module in forward order ({first} to {last}): log10 forward and gradient variance "
    "(top), binades of float16 and bfloat16 headroom before overflow (bottom)."
)
CAPTION = (
    "Shaded: a module whose verdict is not stable. A line that climbs block after block is "
    "a residual stream adding each branch's variance; a drop to 0 (log10 1) is a "
    "normalisation. A headroom bar below the red line overflows in that format; float16 "
    "has about 15 binades above 1, bfloat16 as many as float32."
)
TABLE = "Per module: verdict, reason, variance, max |x|, float16 headroom and flush"
COLUMNS = [
    "order", "module", "kind", "role", "verdict", "reason", "fwd_var", "bwd_var", "fwd_max_abs",
    "fwd_f16_headroom", "bwd_f16_headroom", "fwd_f16_flush", "bwd_f16_flush",
    "fwd_bf16_headroom",
]  # fmt: skip


def your_model(data: ReportData) -> Section:
    section = Section("your-model", TITLE, INTRO)
    rows = data.latest("probe")
    if rows.empty:
        section.status = "not run"
        section.notes.append(NOT_RUN)
        return section
    return describe(section, rows, data)


def describe(section: Section, rows: pd.DataFrame, data: ReportData) -> Section:
    """Fill ``section`` from one probe's rows (also what ``stability.watch``'s report uses)."""
    rows = rows.sort_values("order").reset_index(drop=True)
    first = rows.iloc[0]
    section.notes.append(
        SOURCE.format(
            run_id=first.get("run_id", "?"),
            model=first.get("model", "?"),
            input=first.get("input", "?"),
            loss=first.get("loss", "?"),
            modules=len(rows),
        )
    )
    shown = [c for c in COLUMNS if c in rows.columns]
    section.figures.append(
        cached_figure(
            data,
            "your-model",
            [rows[[c for c in shown if c not in ("reason",)] + ["bwd_bf16_headroom"]]],
            lambda: module_profile(rows),
            ALT.format(first=rows["module"].iloc[0], last=rows["module"].iloc[-1]),
            CAPTION,
        )
    )
    section.tables.append(Table("your-model", TABLE, rows[shown], wrap=True))
    counts = rows["verdict"].value_counts()
    flagged = int(len(rows) - counts.get("stable", 0))
    text = ", ".join(f"{v} {n}" for v, n in counts.items())
    section.verdict = f"{len(rows)} modules: {text}"
    if flagged:
        # Once a value is inf or NaN every later module's is: name the first that made one.
        made = rows[rows["fwd_nonfinite"] > 0] if "fwd_nonfinite" in rows.columns else rows[:0]
        worst = made.iloc[0] if len(made) else rows[rows["verdict"] != "stable"].iloc[0]
        where, verdict = str(worst["module"]), str(worst["verdict"])
        origin = _origin(rows) if not len(made) else None
        if origin is not None:
            where, verdict = origin["module"], origin["verdict"]
            where += f" (in block {origin['block']})" if origin["block"] else ""
        section.judge("warn", f"{flagged} modules not stable; it starts at {where}: {verdict}")
    else:
        section.judge("pass", section.verdict)
    return section


def _origin(rows: pd.DataFrame) -> dict[str, Any] | None:
    """Where the probe says the trouble starts (rows from before the roles: None)."""
    if "side" not in rows.columns:
        return None
    records = [{str(k): v for k, v in r.items()} for r in rows.to_dict("records")]
    found: dict[str, Any] | None = summary(records).get("origin")
    return found
