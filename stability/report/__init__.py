"""The HTML report: ``build`` runs what is missing and renders ``reports/index.html``.

``sections`` holds one function per section, ``figures`` draws, ``runner`` computes and
caches, ``inputs`` gathers what exists, ``junit`` reads the property results.
"""

from stability.report.build import BuildResult, build, render

__all__ = ["BuildResult", "build", "render"]
