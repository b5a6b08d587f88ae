"""The report's sections, one module each: ``ReportData -> Section``, in page order.

A section never fails for lack of input: it says "not run" or "not available" and why.
A section renders and computes nothing: its numbers come from the store, the runner or
``inputs``; its words are the constants at the top of its module. Adding a section is one
module and one entry in ``SECTIONS``; ``sections.gate.gate`` is the gate section's function.
``page`` holds the page model (health apart from completeness), ``figure_cache`` the
drawn-figure cache, ``rows`` the choice of sweep rows the sections share, ``summary`` the
first screen built from the drawn sections (state, recommendation, offenders).
"""

from collections.abc import Callable

from stability.report.inputs import ReportData
from stability.report.sections import (
    atlas,
    doctor,
    environment,
    experiments,
    gate,
    heatmap,
    history,
    lowp,
    lowp_sweep,
    notes,
    phase,
    precision,
    properties,
    scaling,
    spectrum,
    throughput,
    your_model,
)
from stability.report.sections.page import Figure, Section, Table

SECTIONS: list[Callable[[ReportData], Section]] = [
    environment.environment,
    atlas.atlas,
    heatmap.heatmap,
    precision.precision,
    notes.notes_figures,
    properties.properties,
    throughput.throughput,
    gate.gate,
    doctor.doctor,
    history.history,
    your_model.your_model,
    spectrum.spectrum_section,
    phase.phase_section,
    experiments.experiments,
    scaling.scaling,
    lowp.lowp,
    lowp_sweep.lowp_sweep,
]

__all__ = ["SECTIONS", "Figure", "Section", "Table"]
