"""Matplotlib figures for the report, drawn off-screen and encoded as inline data URIs.

Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot): nothing global is
kept between figures and the Agg/SVG backends need no display. Each function takes tidy
DataFrames already reduced by ``stability.report.sections`` and only draws. This module
holds the shared helpers, the atlas and the notes' plain line plots; ``figures_growth``
the verdict-scaled growth figures, ``figures_runs`` precision, throughput and history.

Scales show decisions: log10 axes and colours centre on 0, mark the stable band
(``BAND`` decades) and saturate at ``SATURATE`` (three band widths), where the verdict
no longer changes; past it a value sits on the rim instead of stretching the scale.
"""

import base64
import functools
import io
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from stability.results.verdict_words import BAND

matplotlib.use("Agg")

# log10 values beyond this are drawn at the edge: float32 overflows at 10^38.5, so every
# finite float32 variance fits, and inf (overflow) or 0 (total underflow) sit on the rim.
LOG_CLIP = 40.0
SATURATE = 3 * BAND  # decades of growth past which colours and axes stop changing
ATLAS_LIMIT = SATURATE + 2.0  # the atlas' y axis: the band around layer 1, plus room
BAND_COLOR = "#2e7d32"
FIG_WIDTH = 12.0  # inches; at 100 dpi the page's 1200 px content column
FORWARD_COLOR = "#1f5fa8"
BACKWARD_COLOR = "#c2410c"
THEORY_COLOR = "#111111"
EVENT_COLORS = {"overflow": "#c0262d", "subnormal": "#d98c00", "flush": "#2563a8"}
_RC: dict[Any, Any] = {
    "font.size": 8.0,
    "axes.titlesize": 8.0,
    "axes.labelsize": 8.0,
    "xtick.labelsize": 7.0,
    "ytick.labelsize": 7.0,
    "legend.fontsize": 7.0,
    "svg.fonttype": "none",  # text stays text: smaller files, selectable, browser fonts
    "svg.hashsalt": "stability-report",  # deterministic element ids
}


P = ParamSpec("P")
R = TypeVar("R")


def styled(fn: Callable[P, R]) -> Callable[P, R]:
    """Draw inside the report's rc context: rc values are read as artists are created."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.rc_context(_RC):
            return fn(*args, **kwargs)

    return wrapper


def new_figure(width: float = FIG_WIDTH, height: float = 4.0, constrained: bool = True) -> Figure:
    """A pyplot-free figure; small multiples pass ``constrained=False`` and place their own
    margins, as constrained layout costs seconds per hundred panels."""
    return Figure(figsize=(width, height), layout="constrained" if constrained else None)


def grid_margins(fig: Figure, left: float, top: float, bottom: float) -> None:
    """Fixed margins for a grid of small multiples, in inches."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / w, right=1 - 0.1 / w, top=1 - top / h, bottom=bottom / h,
        wspace=0.08, hspace=0.12,
    )  # fmt: skip


def encode(fig: Figure, fmt: str = "svg", dpi: int = 100) -> str:
    """Serialise a figure to a ``data:`` URI (SVG by default, PNG for dense rasters)."""
    buf = io.BytesIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format=fmt, dpi=dpi, metadata={"Date": None} if fmt == "svg" else {})
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def clipped_log10(values: Any) -> np.ndarray:
    """log10 with 0 -> -LOG_CLIP, inf -> +LOG_CLIP and everything clipped to the rim."""
    x = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(x)
    out = np.where(np.isposinf(x), LOG_CLIP, out)
    return np.clip(out, -LOG_CLIP, LOG_CLIP)


def ordered(values: Sequence[str] | pd.Series, preferred: Sequence[str]) -> list[str]:
    """Values in the preferred order first (as the default sweep lists them), then sorted."""
    present = list(dict.fromkeys(str(v) for v in values))
    head = [p for p in preferred if p in present]
    return head + sorted(v for v in present if v not in head)


def panel_grid(fig: Figure, nrows: int, ncols: int) -> np.ndarray:
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    return np.asarray(axes)


@styled
def atlas(
    rows: pd.DataFrame,
    measured: str,
    theory: str,
    activations: Sequence[str],
    inits: Sequence[str],
    color: str,
    ylabel: str,
    reference_layer: str = "first",
    predicted: tuple[str, str] | None = None,
) -> Figure:
    """Small multiples: rows are activations, columns inits; log10 variance against layer.

    ``predicted`` names the columns of the predicted finite-width band (log10 lo, hi), drawn
    hatched between dotted edges where the rows carry it.

    The shaded band spans the seeds (min to max), the solid line is their median in log
    space, the dashed line the mean-field prediction. The green band is the verdict's:
    ``BAND`` decades either side of the reference layer (the first for signals, the last
    for gradients, which flow down); a line leaving it is what the heat map calls exploding
    or vanishing. The axis stops at ``ATLAS_LIMIT``: beyond, values sit on the rim.
    """
    nrows, ncols = len(activations), len(inits)
    fig = new_figure(FIG_WIDTH, 1.25 * nrows + 0.95, constrained=False)
    grid_margins(fig, left=0.75, top=0.5, bottom=0.45)
    axes = panel_grid(fig, nrows, ncols)
    groups = {key: g for key, g in rows.groupby(["activation", "init"])}
    ymin, ymax = -BAND, BAND
    for r, act in enumerate(activations):
        for c, init in enumerate(inits):
            ax: Axes = axes[r, c]
            g = groups.get((act, init))
            if g is None or g.empty:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            else:
                v = np.clip(clipped_log10(g[measured]), -ATLAS_LIMIT, ATLAS_LIMIT)
                t = np.clip(clipped_log10(g[theory]), -ATLAS_LIMIT, ATLAS_LIMIT)
                logs = g.assign(v=v, t=t)
                band = logs.groupby("layer")["v"].agg(["min", "median", "max"])
                ref = band["median"].iloc[0 if reference_layer == "first" else -1]
                if np.isfinite(ref):
                    ax.axhspan(ref - BAND, ref + BAND, color=BAND_COLOR, alpha=0.09, lw=0)
                ax.fill_between(band.index, band["min"], band["max"], color=color, alpha=0.35, lw=0)
                ax.plot(band.index, band["median"], color=color, lw=2.2, alpha=0.55)
                th = logs.groupby("layer")["t"].first()
                ax.plot(th.index, th.to_numpy(), color=THEORY_COLOR, lw=0.9, ls=(0, (3, 2)))
                if predicted is not None and set(predicted) <= set(g.columns):
                    _predicted_band(ax, g, predicted)
                finite = np.concatenate([band.to_numpy().ravel(), th.to_numpy()])
                finite = finite[np.isfinite(finite)]
                if finite.size:
                    ymin, ymax = min(ymin, finite.min()), max(ymax, finite.max())
            ax.axhline(0.0, color="#999999", lw=0.4, zorder=0)
            if r == 0:
                ax.set_title(init)
            if c == 0:
                ax.set_ylabel(f"{act}\n{ylabel}")
            if r == nrows - 1:
                ax.set_xlabel("layer")
    pad = 0.05 * max(ymax - ymin, 1.0)
    axes[0, 0].set_ylim(max(ymin, -ATLAS_LIMIT) - pad, min(ymax, ATLAS_LIMIT) + pad)
    axes[0, 0].xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    handles = [
        Patch(color=color, alpha=0.35, label="measured, min to max over seeds"),
        Line2D([], [], color=color, lw=2.2, alpha=0.55, label="measured, median"),
        Line2D([], [], color=THEORY_COLOR, lw=0.9, ls=(0, (3, 2)), label="mean-field theory"),
        Patch(color=BAND_COLOR, alpha=0.2,
              label=f"stable band: ±{BAND:g} decades of the {reference_layer} layer"),
    ]  # fmt: skip
    if predicted is not None and set(predicted) <= set(rows.columns):
        handles.append(Patch(facecolor="none", edgecolor=THEORY_COLOR, hatch="////", lw=0.6,
                             label="predicted finite-width band (90 % of seeds)"))  # fmt: skip
    fig.legend(handles=handles, loc="upper center", ncols=len(handles), frameon=False,
               fontsize="small")  # fmt: skip
    return fig


def _predicted_band(ax: Axes, g: pd.DataFrame, band: tuple[str, str]) -> None:
    """The band one seed should fall in, per layer: hatched, edges dotted."""
    per_layer = g.groupby("layer")[list(band)].first().astype(float)
    lo = np.clip(per_layer[band[0]].to_numpy(), -ATLAS_LIMIT, ATLAS_LIMIT)
    hi = np.clip(per_layer[band[1]].to_numpy(), -ATLAS_LIMIT, ATLAS_LIMIT)
    ax.fill_between(per_layer.index, lo, hi, facecolor="none", edgecolor=THEORY_COLOR,
                    hatch="////", lw=0.0, alpha=0.5)  # fmt: skip
    for edge in (lo, hi):
        ax.plot(per_layer.index, edge, color=THEORY_COLOR, lw=0.5, ls=":")


@styled
def line_panels(
    panels: Sequence[tuple[str, pd.DataFrame, str, str]],
    height: float = 2.8,
    styles: dict[str, dict[str, Any]] | None = None,
) -> Figure:
    """One row of panels, each (title, wide frame indexed by x, xlabel, ylabel)."""
    fig = new_figure(FIG_WIDTH, height)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, frame, xlabel, ylabel) in zip(axes, panels, strict=True):
        for column in frame.columns:
            style = {"lw": 1.3, **(styles or {}).get(str(column), {})}
            ax.plot(frame.index, frame[column], label=str(column), **style)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


@styled
def matrix_products(curves: pd.DataFrame, reference: dict[str, float] | None = None) -> Figure:
    """log10 of the largest entry of a running product of random matrices, per seed."""
    fig = new_figure(FIG_WIDTH, 3.0)
    ax = fig.subplots()
    palette = {"N(0, 1)": BACKWARD_COLOR, "N(0, 1/n)": FORWARD_COLOR}
    for (scale, _seed), g in curves.groupby(["scale", "seed"]):
        ax.plot(
            g["factors"],
            g["log10_max_abs"],
            color=palette.get(str(scale), "grey"),
            lw=0.8,
            alpha=0.7,
        )
    for scale, color in palette.items():
        ax.plot([], [], color=color, label=f"entries {scale}")
    for label, value in (reference or {}).items():
        ax.axhline(value, color=THEORY_COLOR, ls="--", lw=0.8)
        ax.annotate(label, (0, value), xytext=(4, 3), textcoords="offset points", fontsize=7)
    ax.set_xlabel("number of 4x4 factors multiplied")
    ax.set_ylabel("log10 max |entry|")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return fig
