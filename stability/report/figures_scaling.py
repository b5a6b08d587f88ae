"""The "Width and depth scaling" figure: mup's coordinate-check plot, one panel per group.

Rows: module groups (block indices folded: ``layers.*.mlp.fc1``), columns: the output's
RMS, its change since step 0, its own weight update's effect (dW x). In each panel the
figure against width (or depth) on log-log axes, one line per recorded step (geometric mean
over seeds and the group's modules), and a dashed line with the scale-stable slope drawn
from the smallest size's value at the last step: a line parallel to it keeps its scale.
"""

import re
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from stability.report.figures import THEORY_COLOR, grid_margins, new_figure, styled

PANEL_FIGURES = {"out_rms": "output RMS", "delta_rms": "RMS of output change",
                 "dwx_rms": "RMS of dW x (own update)"}  # fmt: skip
MAX_GROUPS = 12
MIN_SPAN = 10.0
STEP_COLORS = ["#1f5fa8", "#2e7d32", "#d98c00", "#c0262d", "#6b3fa0", "#111111"]


def group_of(module: str) -> str:
    """``layers.3.mlp.fc1`` -> ``layers.*.mlp.fc1``; ``blocks.last`` stays."""
    return re.sub(r"(^|\.)\d+(?=\.|$)", r"\1*", module)


def _targets(fits: pd.DataFrame, axis: str) -> dict[tuple[str, str], float]:
    got: dict[tuple[str, str], float] = {}
    for r in fits[fits["axis"] == axis].to_dict("records"):
        value: Any = r["target"]
        if pd.notna(value):
            got.setdefault((group_of(str(r["module"])), str(r["figure"])), float(value))
    return got


def _at_least_a_decade(ax: Axes) -> None:
    """Flat must look flat: a panel spans at least a factor 10, centred on its data."""
    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < MIN_SPAN:
        mid = float(np.sqrt(lo * hi))
        ax.set_ylim(mid / np.sqrt(MIN_SPAN), mid * np.sqrt(MIN_SPAN))


@styled
def scaling_panels(rows: pd.DataFrame, fits: pd.DataFrame, axis: str) -> Figure:
    """Small multiples of one coord-check run against ``axis`` (width or depth)."""
    name = "module" if axis == "width" else "depth_module"
    judged = set(fits.loc[fits["axis"] == axis, "module"])  # depth: the blocks, not insides
    rows = rows[rows[name].isin(judged)]
    rows = rows.assign(group=rows[name].map(group_of))
    order = rows.groupby("group")["order"].min().sort_values()
    groups = list(order.index[:MAX_GROUPS])
    targets = _targets(fits, axis)
    steps = sorted(rows["step"].unique())
    fig = new_figure(height=1.9 * len(groups) + 0.8, constrained=False)
    axes = fig.subplots(len(groups), len(PANEL_FIGURES), squeeze=False, sharex=True)
    grid_margins(fig, left=0.9, top=0.5, bottom=0.55)
    fig.subplots_adjust(wspace=0.28, hspace=0.45)
    for i, group in enumerate(groups):
        g = rows[rows["group"] == group]
        for j, (figure, label) in enumerate(PANEL_FIGURES.items()):
            ax = axes[i][j]
            last = None
            for k, step in enumerate(steps):
                s = g[(g["step"] == step) & (g[figure] > 0)]
                if s.empty:
                    continue
                mean = np.exp(np.log(s[figure]).groupby(s[axis]).mean())
                ax.plot(mean.index, mean.to_numpy(), "o-", ms=3, lw=1.2,
                        color=STEP_COLORS[k % len(STEP_COLORS)], label=f"step {step}")  # fmt: skip
                last = mean
            slope = targets.get((group, figure))
            if last is not None and slope is not None and len(last) > 1:
                x = np.asarray(last.index, dtype=float)
                ax.plot(x, last.iloc[0] * (x / x[0]) ** slope, "--", color=THEORY_COLOR,
                        lw=1.0, label=f"stable: {axis}^{slope:g}")  # fmt: skip
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            _at_least_a_decade(ax)
            ax.grid(alpha=0.3, which="both")
            if i == 0:
                ax.set_title(label, fontsize=9)
            if j == 0:
                ax.set_ylabel(group, fontsize=8)
            if i == len(groups) - 1:
                ax.set_xlabel(axis)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", ncol=len(labels), fontsize=8, frameon=False)
    return fig
