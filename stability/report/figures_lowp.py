"""The low-precision heat map: modules (rows, forward order) by format and recipe (columns),
coloured by the module's output SQNR in dB; the target is where the colour turns."""

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from stability.report.figures import new_figure, styled

SQNR_RANGE = (0.0, 40.0)  # dB: fp4 sits near 15, fp8 near 30


@styled
def sqnr_heatmap(table: pd.DataFrame, target: float) -> Figure:
    """``table``: index module, columns "format recipe", values output SQNR in dB."""
    fig = new_figure(height=max(3.0, 0.28 * len(table) + 1.5))
    ax = fig.subplots()
    values = table.to_numpy(dtype=float)
    image = ax.imshow(np.clip(values, *SQNR_RANGE), cmap="RdYlGn", vmin=SQNR_RANGE[0],
                      vmax=SQNR_RANGE[1], aspect="auto")  # fmt: skip
    for (i, j), v in np.ndenumerate(values):
        if math.isfinite(v):
            weight = "bold" if v >= target else "normal"
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, weight=weight)
    ax.set_xticks(range(table.shape[1]), list(table.columns), rotation=30, ha="right")
    ax.set_yticks(range(table.shape[0]), list(table.index))
    fig.colorbar(image, ax=ax, label=f"output SQNR, dB (target {target:g})")
    return fig
