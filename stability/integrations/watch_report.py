"""``Watch.report(path)``: the watched history as one self-contained HTML page.

The page is drawn with the report's helpers (figures as inline SVG, tables through the
report's ``Table``, its style sheet inlined), so it reads like a section of the report: a
line saying whether and where a non-finite value appeared, the forward and backward
variance of every module across the recorded steps, and the last recorded step as a table;
with ``formats=`` the fp8 / MX part after it (``watch_formats_report``).
"""

from importlib import resources
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator

from stability.report.figures import (
    BACKWARD_COLOR,
    FORWARD_COLOR,
    clipped_log10,
    encode,
    new_figure,
    styled,
)
from stability.report.sections.page import Table
from stability.results.files import writable_path, write_text

MAX_LINES = 24  # modules drawn as lines; past it the panel would be unreadable
_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{{ title }}</title><style>{{ css }}</style></head>
<body><main>
<h1>{{ title }}</h1>
<p class="meta">{{ meta }}</p>
<p class="small"><b>{{ verdict }}</b></p>
{% for fig in figures %}<figure><img src="{{ fig.uri }}" alt="{{ fig.alt }}">
<figcaption class="small">{{ fig.caption }}</figcaption></figure>{% endfor %}
{% if table %}<h2>{{ table_title }}</h2>
<div class="scroll">{{ table }}</div>{% endif %}
{% for title, more in extra %}<h2>{{ title }}</h2>
<div class="scroll">{{ more }}</div>{% endfor %}
</main></body></html>
"""


class Fig:
    """A figure of the page: its data URI, alt text and caption."""

    def __init__(self, uri: str, alt: str, caption: str) -> None:
        self.uri, self.alt, self.caption = uri, alt, caption


@styled
def variance_figure(wide: pd.DataFrame, modules: list[str]) -> MplFigure:
    """log10 forward (output) and backward (gradient) variance per module against the step."""
    fig = new_figure(height=3.6)
    fwd, bwd = fig.subplots(1, 2, sharex=True)
    shown = modules[:MAX_LINES]
    for k, name in enumerate(shown):
        rows = wide[wide["module"] == name]
        shade = 0.35 + 0.65 * k / max(1, len(shown) - 1)
        fwd.plot(rows["step"], clipped_log10(rows["act_var"]), color=FORWARD_COLOR,
                 alpha=shade, lw=1.0, label=name)  # fmt: skip
        bwd.plot(rows["step"], clipped_log10(rows["grad_var"]), color=BACKWARD_COLOR,
                 alpha=shade, lw=1.0, label=name)  # fmt: skip
    fwd.set_title("forward: log10 variance of each module's output")
    bwd.set_title("backward: log10 variance of the gradient at each module's output")
    for ax in (fwd, bwd):
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole
        ax.grid(alpha=0.3)
    if len(shown) <= 12:
        fwd.legend(loc="best", fontsize=6)
    return fig


def write_watch_report(
    path: Path, wide: pd.DataFrame, modules: list[str], title: str, meta: str, verdict: str,
    lowp: pd.DataFrame | None = None,
) -> Path:  # fmt: skip
    """Write the page (atomically) from the watch's wide frame; return its path."""
    path = writable_path(path, "watch report")
    figures = []
    if not wide.empty and np.isfinite(wide[["act_var", "grad_var"]].to_numpy(float)).any():
        figures.append(
            Fig(
                encode(variance_figure(wide, modules)),
                "variance per module against the training step",
                "Each line is one module (darker: later in the forward pass). A line that "
                "climbs with the step is a module whose scale drifts during training; lines "
                f"spread far apart at one step mean the network does not preserve variance. "
                f"At most {MAX_LINES} modules are drawn; every one is in to_frame().",
            )
        )
    table = None
    if not wide.empty:
        last = wide[wide["step"] == wide["step"].max()]
        cols = ["module", "act_var", "act_max_abs", "grad_var", "weight_grad_var", "nonfinite"]
        table = Markup(Table("watch_last", "last recorded step", last[cols]).html)
    extra: list[tuple[str, Markup]] = []
    if lowp is not None and not lowp.empty:
        from stability.integrations.watch_formats_report import formats_parts

        more, extra = formats_parts(lowp)
        figures.extend(Fig(*f) for f in more)
    write_page(path, title, meta, verdict, figures, table, "Last recorded step, per module",
               extra=extra)  # fmt: skip
    return path


def write_page(
    path: Path,
    title: str,
    meta: str,
    verdict: str,
    figures: list[Fig],
    table: Markup | None,
    table_title: str,
    what: str = "watch report",
    extra: list[tuple[str, Markup]] | None = None,
) -> None:
    """One self-contained page (the report's style sheet inlined, images as data URIs)."""
    css = resources.files("stability.report").joinpath("report.css").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    page = env.from_string(_TEMPLATE).render(
        title=title, css=Markup(css), meta=meta, verdict=verdict, figures=figures,
        table=table, table_title=table_title, extra=extra or [],
    )  # fmt: skip
    write_text(path, page, what)
