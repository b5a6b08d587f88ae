"""The HTML report: ``build`` runs what is missing and renders ``reports/index.html``.

``plan`` says which grids and steps, ``runner`` runs them (``progress`` shows it, ``cache``
fingerprints and reuses, ``gate_run`` judges the gate), ``inputs`` gathers what exists,
``sections`` renders one module per section (computing nothing) and ``sections.summary``
the verdict box on top, ``figures`` (with ``figures_growth`` and ``figures_runs``) draws,
``junit`` reads the property results.
"""

from stability.report.build import BuildResult, build, render

__all__ = ["BuildResult", "build", "render"]
