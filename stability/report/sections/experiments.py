"""14. The notes' experiments: each chapter's experiment over seeds, its claims counted.

The rows come from the store (``ReportData.latest("exp_<name>")``, written by ``stability
experiments`` or by the report's own quick run); the claims are judged on those rows by the
experiment's own ``claims`` and the figures drawn by its own ``draw``: nothing is trained
here.
"""

import functools

import pandas as pd

from stability.experiments.registry import EXPERIMENTS
from stability.experiments.runner import record_name
from stability.report.inputs import ReportData
from stability.report.sections.figure_cache import cached_figure
from stability.report.sections.page import Section, Table

TITLE = "14. The notes' experiments"
INTRO = (
    "The chapters' experiments rerun on synthetic data with several seeds each (bands: min "
    "to max over seeds, line: median). Each claim is a count over seeds, with the bar the "
    "property suite holds it to."
)
NOT_RUN = "No experiment rows in the store: run `stability experiments --quick` (or the report)."
MISSING = "{title}: not in the store."
ALT = "{title}: the experiment's curves over seeds."
TABLE = "Each experiment's claims, counted over seeds"
HEALTHY = "{held} of {total} claims hold across seeds"
FAILED = "{failed} of {total} claims fail: {names}"
UNHASHABLE = ("curve",)  # list columns: kept in the store, left out of the figure-cache key


def experiments(data: ReportData) -> Section:
    section = Section("experiments", TITLE, INTRO)
    claim_rows: list[dict[str, object]] = []
    missing = []
    for exp in EXPERIMENTS.values():
        rows = data.latest(record_name(exp.name))
        if rows.empty:
            missing.append(exp.title)
            continue
        rows = rows.drop(columns=["run_id"])
        claims = exp.claims(rows)
        run = int(data.latest(record_name(exp.name))["run_id"].iloc[0])
        lines = " ".join(f"{'✓' if c.ok else '✗'} {c.line()}." for c in claims)
        caption = f"{exp.conclusion} Across seeds (store run {run}): {lines}"
        key = rows.drop(columns=[c for c in UNHASHABLE if c in rows.columns])
        draw = functools.partial(exp.draw, rows)
        section.figures.append(
            cached_figure(data, f"experiment-{exp.name}", [key], draw,
                          ALT.format(title=exp.title), f"{exp.title}. {caption}")
        )  # fmt: skip
        claim_rows += [{"experiment": exp.name, **c.as_dict()} for c in claims]
    if not claim_rows:
        section.status = "not run"
        section.notes.append(NOT_RUN)
        return section
    if missing:
        section.status = "partial"
        section.notes += [MISSING.format(title=t) for t in missing]
    table = pd.DataFrame(claim_rows)
    section.tables.append(Table("experiment-claims", TABLE, table, wrap=True))
    failed = table[~table["ok"].astype(bool)]
    if failed.empty:
        section.judge("pass", HEALTHY.format(held=len(table), total=len(table)))
        section.verdict = f"{len(table)} of {len(table)} claims hold"
    else:
        names = ", ".join(sorted(set(failed["experiment"])))
        section.judge("warn", FAILED.format(failed=len(failed), total=len(table), names=names))
        section.verdict = f"{len(table) - len(failed)} of {len(table)} claims hold"
    return section
