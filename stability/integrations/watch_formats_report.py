"""The watch report's fp8 / MX part (``watch(..., formats=...)``): amax drift and events.

A figure of log2 amax per module against the step, one panel per tensor (input, weight,
output, gradient; amax is the tensor's own, so one line serves every format and recipe),
the first recorded step at which each (module, format, recipe, tensor) overflowed, and the
last recorded step's figures as a table.
"""

import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator

from stability.report.figures import FORWARD_COLOR, encode, new_figure, styled
from stability.report.sections.page import Table
from stability.usermodel.lowp_probe import TENSORS

MAX_LINES = 24  # modules drawn as lines, as on the rest of the page
LAST = ["module", "format", "recipe", "tensor", "amax", "scale_log2_max", "overflow_frac",
        "saturation_frac", "underflow_frac", "flush_frac", "sqnr_db"]  # fmt: skip


@styled
def amax_figure(lowp: pd.DataFrame) -> MplFigure:
    """log2 amax of each module's input, weight, output and gradient against the step."""
    fig = new_figure(height=3.2)
    axes = fig.subplots(1, len(TENSORS), sharex=True)
    one = lowp.drop_duplicates(["step", "module", "tensor"])
    shown = list(dict.fromkeys(one["module"]))[:MAX_LINES]
    for ax, tensor in zip(axes, TENSORS, strict=True):
        for k, name in enumerate(shown):
            rows = one[(one["module"] == name) & (one["tensor"] == tensor)]
            with np.errstate(divide="ignore"):
                y = np.log2(rows["amax"].to_numpy(float))
            shade = 0.35 + 0.65 * k / max(1, len(shown) - 1)
            ax.plot(rows["step"], y, color=FORWARD_COLOR, alpha=shade, lw=1.0, label=name)
        ax.set_title(f"{tensor}: log2 amax", fontsize=8)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole
        ax.grid(alpha=0.3)
    if len(shown) <= 8:
        axes[0].legend(loc="best", fontsize=6)
    return fig


def first_overflows(lowp: pd.DataFrame) -> pd.DataFrame:
    """The first recorded step at which each (module, format, recipe, tensor) overflowed."""
    bad = lowp[lowp["overflow_frac"] > 0]
    keys = ["module", "format", "recipe", "tensor"]
    return bad.groupby(keys, sort=False).first().reset_index()[["step", *keys, "overflow_frac"]]


def formats_parts(
    lowp: pd.DataFrame,
) -> tuple[list[tuple[str, str, str]], list[tuple[str, Markup]]]:
    """The figures (data URI, alt, caption) and tables (title, HTML) of the fp8 part."""
    if lowp.empty:
        return [], []
    fig = (
        encode(amax_figure(lowp)),
        "log2 amax of each matmul module's tensors against the training step",
        "Each line is one matmul module (darker: later in the forward pass). A climbing "
        "line is the amax drift that a delayed (amax-history) scale lags behind: its "
        "overflow fraction is in the tables. At most "
        f"{MAX_LINES} modules are drawn; every one is in formats_frame().",
    )
    first = first_overflows(lowp)
    last = lowp[lowp["step"] == lowp["step"].max()][LAST]
    tables = [("fp8 / MX: figures at the last recorded step",
               Markup(Table("watch_formats_last", "last recorded step", last).html))]  # fmt: skip
    if not first.empty:
        html = Markup(Table("watch_formats_overflow", "first overflow", first).html)
        tables.insert(0, ("fp8 / MX: first recorded step with an overflow", html))
    return [fig], tables
