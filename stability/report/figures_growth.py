"""Growth figures on the verdict's scale: the heat map and growth against depth.

Colours centre on 0 and change character at the band edge (pale inside the stable band,
strong outside), then saturate at ``SATURATE``: tanh/xavier at -2.0 no longer looks as
white as relu/kaiming at -0.1 just because some other config overflowed at +38. Every
cell still prints its value, and a borderline cell (within ``BORDERLINE`` of the edge) is
outlined, as its verdict flips on a hair.
"""

import math
from collections.abc import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from stability.report.figures import BAND_COLOR, FIG_WIDTH, SATURATE, new_figure, styled
from stability.results.verdict_words import BAND

NOT_RUN_COLOR = "#ffffff"
NONFINITE_COLOR = "#4a4a4a"


def band_colormap(band: float = BAND, saturate: float = SATURATE) -> LinearSegmentedColormap:
    """Blue (vanishes) to red (explodes), pale inside ±band with a visible step at its edge."""

    def at(x: float) -> float:
        return (x + saturate) / (2 * saturate)

    step = 1e-3
    nodes = [
        (0.0, "#08306b"),
        (at(-band) - step, "#4f93c9"),
        (at(-band), "#cfe1f2"),
        (0.5, "#ffffff"),
        (at(band), "#fbd5c2"),
        (at(band) + step, "#e8694a"),
        (1.0, "#67000d"),
    ]
    return LinearSegmentedColormap.from_list("band", nodes)


def _fmt(v: float, digits: int = 1) -> str:
    """Signed, one decimal; two near the band edge, where -1.98 and -2.02 differ in verdict."""
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    zero = f"{0:.{digits}f}"
    return f"{v:+.{digits}f}".replace(f"-{zero}", zero).replace(f"+{zero}", zero)


@styled
def growth_heatmap(
    panels: Sequence[tuple[str, pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]],
) -> Figure:
    """Side-by-side heat maps of log10 growth, one per direction, on the band scale.

    Each panel is (title, measured, theory, borderline, missing), all pivots of activation
    by init. Cells print the measured value and, in brackets, the prediction; non-finite
    cells are dark grey, cells not run are white with a dash.
    """
    rows = max(len(p[1]) for p in panels)
    fig = new_figure(FIG_WIDTH, max(0.42 * rows + 1.6, 3.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    cmap = band_colormap().with_extremes(bad=NONFINITE_COLOR)
    norm = Normalize(-SATURATE, SATURATE, clip=True)
    image = None
    for ax, (title, measured, theory, borderline, missing) in zip(axes, panels, strict=True):
        values = measured.to_numpy(dtype=float)
        shown = np.where(np.isposinf(values), SATURATE, values)
        shown = np.where(np.isneginf(shown), -SATURATE, shown)
        absent = missing.to_numpy(dtype=bool)
        colours = np.ma.masked_invalid(np.where(absent, 0.0, shown))
        image = ax.imshow(colours, cmap=cmap, norm=norm, aspect="auto")
        ax.set_xticks(range(measured.shape[1]), list(measured.columns), rotation=30, ha="right")
        ax.set_yticks(range(measured.shape[0]), list(measured.index))
        ax.set_title(title)
        edge = borderline.to_numpy(dtype=bool)
        predicted = theory.to_numpy(dtype=float)
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                if absent[i, j]:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, color=NOT_RUN_COLOR))
                    ax.text(j, i, "not run", ha="center", va="center", fontsize=6, color="#777")
                    continue
                digits = 2 if edge[i, j] else 1
                text = f"{_fmt(values[i, j], digits)}\n({_fmt(predicted[i, j])})"
                dark = not np.isfinite(values[i, j]) or abs(shown[i, j]) > 0.6 * SATURATE
                ax.text(j, i, text, ha="center", va="center", fontsize=6.5,
                        color="white" if dark else "black")  # fmt: skip
                if edge[i, j]:
                    ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False,
                                           ec="black", lw=1.2, ls=(0, (2, 1.5))))  # fmt: skip
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes), shrink=0.85, extend="both")
        bar.set_label(f"log10 growth (stable within ±{BAND:g})")
        bar.set_ticks([-SATURATE, -BAND, 0, BAND, SATURATE])
        for edge_value in (-BAND, BAND):
            bar.ax.axhline(edge_value, color="black", lw=0.8)
    handles = [
        Patch(facecolor=NONFINITE_COLOR, label="non-finite (inf/NaN in the network)"),
        Patch(facecolor="white", edgecolor="black", ls=(0, (2, 1.5)), label="borderline verdict"),
        Patch(facecolor="white", edgecolor="#bbbbbb", label="not run"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    return fig


@styled
def growth_vs_depth(
    table: pd.DataFrame, activations: Sequence[str], inits: Sequence[str], dtypes: Sequence[str]
) -> Figure:
    """log10 growth against depth: rows forward/backward, a panel per activation, a colour
    per init and a line style per dtype, with the stable band shaded and the axis clipped."""
    ncols = len(activations)
    fig = new_figure(FIG_WIDTH, 5.0)
    axes = np.asarray(fig.subplots(2, ncols, sharex=True, sharey=True, squeeze=False))
    palette = matplotlib.colormaps["tab10"]
    styles = ["-", "--", ":", "-."]
    limit = SATURATE + 0.5
    for r, (column, label) in enumerate(
        (("fwd_log10_growth", "forward"), ("bwd_log10_growth", "backward"))
    ):
        for c, act in enumerate(activations):
            ax = axes[r, c]
            ax.axhspan(-BAND, BAND, color=BAND_COLOR, alpha=0.09, lw=0)
            for i, init in enumerate(inits):
                for d, dtype in enumerate(dtypes):
                    g = table[
                        (table["activation"] == act)
                        & (table["init"] == init)
                        & (table["dtype"] == dtype)
                    ].sort_values("depth")
                    if g.empty:
                        continue
                    y = np.clip(g[column].to_numpy(dtype=float), -limit, limit)
                    ax.plot(g["depth"], y, color=palette(i % 10), ls=styles[d % len(styles)],
                            marker="o", ms=3, lw=1.1)  # fmt: skip
            if r == 0:
                ax.set_title(act)
            else:
                ax.set_xlabel("depth (layers)")
            if c == 0:
                ax.set_ylabel(f"{label}\nlog10 growth")
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylim(-limit - 0.3, limit + 0.3)
    handles: list[Artist] = [
        Line2D([], [], color=palette(i % 10), label=init) for i, init in enumerate(inits)
    ]
    handles += [
        Line2D([], [], color="black", ls=styles[d % len(styles)], label=dtype)
        for d, dtype in enumerate(dtypes)
    ]
    handles.append(Patch(color=BAND_COLOR, alpha=0.2, label=f"stable band ±{BAND:g}"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 7),
               frameon=False)  # fmt: skip
    return fig
