"""Which layers can go to fp8 / fp4: the newest ``stability probe --formats``, module by format.

The rows are the store's ``probe_formats`` records and its ``probe_formats_advice`` (written
by ``stability probe --formats``); nothing is computed here but the pivot for the figure.
"""

from stability.report.figures_lowp import sqnr_heatmap
from stability.report.inputs import ReportData
from stability.report.sections.figure_cache import cached_figure
from stability.report.sections.page import Section, Table
from stability.usermodel.lowp_advice import KEEP

TITLE = "16. Which layers can go to fp8 / fp4"
INTRO = (
    "Every matmul module of your model (Linear, Conv1D, Conv) with its input and weight "
    "stored in each low-precision format under each scaling recipe: the SQNR of its "
    "output, recomputed in float64 from the quantised operands against float64 from the "
    "exact ones. The recommendation is the cheapest format (fewest bits per element) whose "
    "output and gradient keep the target SQNR with nothing overflowing; otherwise the module "
    "keeps bf16 (docs/low-precision.md)."
)
NOT_RUN = (
    "No low-precision probe in the store: run `stability probe --model pkg.module:factory "
    "--input ... --formats e4m3,e5m2,mxfp8,mxfp4 --recipe tensor`, then the report again."
)
ALT = "Heat map of output SQNR in dB: {modules} modules by {cases} format and recipe pairs."
CAPTION = (
    "Green is above about 25 dB, red below 10; bold numbers reach the target. E4M3 gives "
    "about 31 dB per operand, E5M2 and MXFP6 25, MXFP4 19 at best; a module far below its "
    "column's theory has outliers or a range the recipe cannot cover."
)
TABLE = "Per module: recommendation, output SQNR and why a module keeps bf16"
TARGET = 20.0


def lowp(data: ReportData) -> Section:
    section = Section("low-precision", TITLE, INTRO)
    rows = data.latest("probe_formats")
    if rows.empty:
        section.status = "not run"
        section.notes.append(NOT_RUN)
        return section
    out = rows[rows["tensor"] == "output"].copy()
    out["case"] = out["format"] + " " + out["recipe"]
    table = out.pivot_table(index="module", columns="case", values="sqnr_db", sort=False)
    order = out.drop_duplicates("module").set_index("module")["order"]
    table = table.loc[order.sort_values().index]
    advice = data.latest("probe_formats_advice")
    section.figures.append(
        cached_figure(
            data,
            "low-precision",
            [table],
            lambda: sqnr_heatmap(table, TARGET),
            ALT.format(modules=len(table), cases=table.shape[1]),
            CAPTION,
        )
    )
    if not advice.empty:
        shown = ["module", "kind", "recommendation", "sqnr_db", "reason"]
        section.tables.append(Table("low-precision", TABLE, advice[shown], wrap=True))
        kept = int((advice["verdict"] == KEEP).sum())
        section.verdict = f"{len(advice) - kept} of {len(advice)} matmul modules can leave bf16"
        first = next(
            (m for m, v in zip(advice["module"], advice["verdict"], strict=True) if v == KEEP), ""
        )
        if kept:
            section.judge(
                "warn",
                f"{kept} modules keep bf16, first {first}",
            )
        else:
            section.judge("pass", section.verdict)
    return section
