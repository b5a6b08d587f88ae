"""8. Gate: the runner's verdict against the committed baseline, rendered as rows.

Nothing is judged here: the figure rows and the throughput row come from the runner
(``stability.report.gate_run``) or its cache, through ``ReportData.gate``.
"""

import numpy as np
import pandas as pd

from stability.measure import gate as gatekeeper
from stability.measure.stats import ALPHA
from stability.report.inputs import ReportData
from stability.report.sections.page import Section, Table

TITLE = "8. Gate"
INTRO = (
    "The CI gate against the committed baseline. Stability figures: the per-layer variances "
    "of a fixed 12-cell CPU grid (float64 and float32, fixed seeds, one thread) are "
    "recomputed by the report's runner (once per code, machine and baseline) and compared "
    "on any machine with cross-machine tolerances (|now − base| ≤ rtol·|base|, rtol per "
    "dtype, see docs/figure-tolerances.md). Throughput, only on the machine that wrote the "
    "baseline: the training step's efficiency against the baseline's rounds, a regression "
    f"only if more than {gatekeeper.EFFICIENCY_TOLERANCE:.0%} slower and significant "
    f"(one-sided Mann-Whitney U, p < {ALPHA})."
)
GATE_WORDS = {
    gatekeeper.PASS: "PASS",
    gatekeeper.REGRESSION: "REGRESSION",
    gatekeeper.CANNOT_JUDGE: "CANNOT JUDGE",
}
GATE_EXITS = (
    "Exit codes of `stability gate`: 0 pass, 1 regression, 2 cannot judge (a missing, corrupt, "
    "partial or wrong-version baseline): it never passes by default. Throughput measured on "
    "another machine is shown as NOT JUDGED and does not fail the gate by itself."
)
REBASELINE = (
    "Create one on this machine with `stability baseline --reason '...'` (a few seconds) and "
    "commit baselines/baseline.json; `stability gate` then judges every commit against it."
)
NO_VERDICT = "NOT JUDGED: no verdict for this code and baseline"
NOT_JUDGED = (
    "The stability figures were not judged for this code and baseline (rendered with "
    "--no-run and nothing cached, or the runner's gate step failed: see section 1): run "
    "`stability report` without --no-run, or `stability gate`."
)
TIMED = "Throughput measured by the report's runner at {finished} ({rounds} rounds, code {code})."
NOT_TIMED = (
    "Throughput not judged in this report (rendered with --no-run, or nothing measured "
    "for this code and baseline): run `stability gate` or `nox -s gate`."
)
TABLE = (
    "What the gate compared, rows not ok first: 'change' is the relative move of a layer "
    "outside the tolerance (stability) or the ratio now / baseline (throughput)"
)
BASELINE_TABLE = "The baseline: who wrote it, when and why"
MOVED = "The checks that are not ok"


def gate(data: ReportData) -> Section:
    """The gate's verdict as the runner judged it: figure rows, then the throughput row."""
    section = Section("gate", TITLE, INTRO)
    section.notes.append(GATE_EXITS)
    baseline = data.baseline
    if baseline is None or baseline.doc is None:
        missing = baseline is None or baseline.missing
        where = baseline.path if baseline is not None else "the project's baselines/"
        section.status = "not available"
        section.verdict = f"{GATE_WORDS[gatekeeper.CANNOT_JUDGE]} (exit 2): " + (
            "no baseline" if missing else "unusable baseline"
        )
        reason = baseline.error if baseline is not None else ""
        section.notes.append(f"No baseline at {where}." if missing else f"Cannot judge: {reason}.")
        section.notes.append(REBASELINE)
        section.judge("fail", section.verdict)
        return section
    facts = pd.DataFrame({"item": list(baseline.facts), "value": list(baseline.facts.values())})
    result = data.gate
    if result is None:
        section.status = "not run"
        section.verdict = NO_VERDICT
        section.notes.append(NOT_JUDGED)
        section.tables.append(Table("gate-baseline", BASELINE_TABLE, facts))
        section.judge("not run", "not judged for this code and baseline (--no-run, no cache)")
        return section
    rows, code, throughput = result.rows, result.code, result.throughput
    if result.figures_code != gatekeeper.CANNOT_JUDGE and throughput is not None:
        if throughput["row"].get("verdict") == gatekeeper.NOT_JUDGED:
            section.notes.append(f"Throughput {throughput['row'].get('reason')}.")
        else:
            section.notes.append(
                TIMED.format(
                    finished=throughput.get("finished"),
                    rounds=throughput.get("rounds"),
                    code=throughput.get("code"),
                )
            )
        if throughput.get("nonfinite_losses"):
            section.notes.append(f"{throughput['nonfinite_losses']} non-finite losses when timed.")
    elif result.figures_code != gatekeeper.CANNOT_JUDGE:
        section.status = "partial"
        section.notes.append(NOT_TIMED)
    else:
        section.status = "not available"
        section.notes.append(REBASELINE)
    section.notes.extend(result.notes)
    moved = [r for r in rows if r.verdict != gatekeeper.OK]
    timed = throughput is not None and throughput["row"].get("verdict") != gatekeeper.NOT_JUDGED
    judged = "stability figures" + (" and throughput" if timed else " only")
    section.verdict = (
        f"{GATE_WORDS[code]} (exit {code}): {len(moved)} of {len(rows)} checks not ok, {judged}"
    )
    section.failed = code == gatekeeper.REGRESSION
    section.judge("pass" if code == gatekeeper.PASS else "fail", section.verdict)
    frame = pd.DataFrame([r.as_dict() for r in rows])
    if not frame.empty:
        # Not ok first, then throughput (one row), then the long list of equal figures.
        rank = (frame["verdict"] == gatekeeper.OK).astype(int) * 2 + (frame["check"] == "figures")
        frame = frame.iloc[np.argsort(rank.to_numpy(), kind="stable")]
        not_ok = frame[frame["verdict"] != gatekeeper.OK]
        if 0 < len(not_ok) < len(frame):
            section.tables.append(Table("gate-not-ok", MOVED, not_ok, open=True))
    section.tables.append(Table("gate", TABLE, frame))
    section.tables.append(Table("gate-baseline", BASELINE_TABLE, facts))
    return section
