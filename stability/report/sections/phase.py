"""The edge of chaos for tanh: phase diagram, critical line, measured depth scales.

Rows: ``phase_diagram`` and ``critical_line`` records (``report/spectrum_cases.py``).
"""

import pandas as pd

from stability.core.depth_scales import t_sigmas
from stability.report import figures_spectrum
from stability.report.inputs import ReportData
from stability.report.sections.figure_cache import cached_figure
from stability.report.sections.page import Section, Table
from stability.report.sections.spectrum import numeric

TITLE = "13. Edge of chaos: the phase diagram"
INTRO = (
    "Biases drawn from N(0, sigma_b^2) and weights from N(0, sigma_w^2/n): mean field "
    "(Poole et al. 2016; Schoenholz et al. 2017) splits the plane into an ordered phase "
    "(chi_1 < 1: inputs merge, gradients vanish) and a chaotic one (chi_1 > 1: inputs "
    "decorrelate, gradients explode), separated by the critical line chi_1 = 1 on which "
    "the correlation depth scale xi_c is infinite. 'stability criticality --depth L' picks "
    "a point on it."
)
ALT = "log10 of the correlation depth scale over sigma_w^2 and sigma_b^2, with the critical line."
CAPTION = (
    "Conclude: signals travel about xi_c layers before two inputs become indistinguishable "
    "(ordered) or unrelated (chaotic); a network trains to depths of a few xi_c. Only "
    "near the white line does xi_c exceed the depth of a deep network: initialise there."
)
MEASURED = "Measured (simulated networks) against predicted chi_1 and depth scales"
LINE = "The critical line: sigma_w^2 with chi_1 = 1 per sigma_b^2 (tanh)"
MEASURED_COLUMNS = [
    "sigma_w2",
    "sigma_b2",
    "phase",
    "chi_1",
    "measured_chi_1",
    "measured_chi_1_se",
    "xi_c",
    "measured_xi_c",
    "xi_q",
    "measured_xi_q",
]
SIGMAS = 5.0


def _nets(measured: pd.DataFrame) -> str:
    if "measured_nets" not in measured.columns or measured.empty:
        return "an unknown number of"
    return str(int(measured["measured_nets"].min()))


def chi_1_bounds(measured: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per measured point: the 5-sigma bound in standard errors, and how many standard
    errors the simulated chi_1 sits beyond its finite-width bias bound (1 / width).

    The error is estimated from a few networks, so ``(chi - chi_1) / se`` is Student's t
    (``depth_scales.t_sigmas``); rows stored before the count was kept are judged at 5.
    """
    gap = (measured["measured_chi_1"] - measured["chi_1"]).abs()
    if {"measured_nets", "measured_width"} <= set(measured.columns):
        gap = (gap - 1.0 / measured["measured_width"]).clip(lower=0.0)
        bound = measured["measured_nets"].map(lambda n: t_sigmas(int(n) - 1))
    else:
        bound = pd.Series(SIGMAS, index=measured.index)
    return bound, gap / measured["measured_chi_1_se"]


def phase_section(data: ReportData) -> Section:
    section = Section("phase", TITLE, INTRO)
    rows = numeric(data.latest("phase_diagram"))
    line = numeric(data.latest("critical_line"))
    if rows.empty or line.empty:
        section.status = "not run"
        section.notes.append("No phase diagram was stored: run 'stability report'.")
        return section
    grid = rows[~rows["measured"].astype(bool)]
    section.figures.append(cached_figure(data, "phase-diagram", [grid, line],
        lambda: figures_spectrum.phase_diagram(grid, line), ALT, CAPTION))  # fmt: skip
    measured = rows[rows["measured"].astype(bool)]
    section.tables.append(Table("phase-measured", MEASURED, measured[MEASURED_COLUMNS]))
    section.tables.append(Table("critical-line", LINE, line[["sigma_b2", "sigma_w2"]]))
    bound, excess = chi_1_bounds(measured)
    worst = float((excess / bound).max()) if len(excess) else 0.0
    section.verdict = (
        f"simulated chi_1 within {float(excess.max()) if len(excess) else 0.0:.1f} standard "
        f"errors (beyond its finite-width bias bound 1/width) of mean field at "
        f"{len(measured)} points; the 5-sigma bound for an error estimated from "
        f"{_nets(measured)} networks is {float(bound.max()) if len(bound) else SIGMAS:.1f}"
    )
    if worst > 1.0:
        section.judge("warn", f"measured chi_1 {float(excess.max()):.1f} standard errors off "
                      f"mean field (bound {float(bound.max()):.1f})")  # fmt: skip
    else:
        section.judge("pass", section.verdict)
    return section
