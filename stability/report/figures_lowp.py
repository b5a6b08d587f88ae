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


@styled
def sqnr_by_layer(rows: pd.DataFrame, target: float = 20.0) -> Figure:
    """``rows``: ``sweep_formats`` records. One panel per (format, recipe): output (solid)
    and gradient (dotted) SQNR against layer, one colour per network."""
    cases = list(rows.drop_duplicates(["format", "recipe"])[["format", "recipe"]].itertuples(
        index=False, name=None))  # fmt: skip
    fig = new_figure(height=3.2, width=min(4.0 * len(cases), 12.0))
    axes = np.atleast_1d(fig.subplots(1, len(cases), sharey=True))
    networks = rows.drop_duplicates("mlp_key")
    colours = {k: f"C{i % 10}" for i, k in enumerate(networks["mlp_key"])}
    labels = {k: f"{a}/{i} d{d}" for k, a, i, d in networks[
        ["mlp_key", "activation", "init", "depth"]].itertuples(index=False, name=None)}  # fmt: skip
    for ax, (fmt, recipe) in zip(axes, cases, strict=True):
        case = rows[(rows["format"] == fmt) & (rows["recipe"] == recipe)]
        for key, net in case.groupby("mlp_key", sort=False):
            for tensor, style in (("output", "-"), ("grad", ":")):
                part = net[net["tensor"] == tensor].sort_values("layer")
                ax.plot(part["layer"], part["sqnr_db"], style, color=colours[str(key)],
                        label=labels[str(key)] if tensor == "output" else None)  # fmt: skip
        ax.axhline(target, color="0.4", linestyle="--", linewidth=0.8)
        ax.set_title(f"{fmt} {recipe}", fontsize=9)
        ax.set_xlabel("layer")
    axes[0].set_ylabel("SQNR, dB (solid output, dotted gradient)")
    axes[-1].legend(fontsize=7, loc="best")
    return fig
