"""Matplotlib figures for the report, drawn off-screen and encoded as inline data URIs.

Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot): nothing global is
kept between figures and the Agg/SVG backends need no display. Each function takes tidy
DataFrames already reduced by ``stability.report.sections`` and only draws.
"""

import base64
import functools
import io
import math
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator, ScalarFormatter

matplotlib.use("Agg")

# log10 values beyond this are drawn at the edge: float32 overflows at 10^38.5, so every
# finite float32 variance fits, and inf (overflow) or 0 (total underflow) sit on the rim.
LOG_CLIP = 40.0
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


def _grid_margins(fig: Figure, left: float, top: float, bottom: float) -> None:
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


def _panel_grid(fig: Figure, nrows: int, ncols: int) -> np.ndarray:
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
) -> Figure:
    """Small multiples: rows are activations, columns inits; log10 variance against layer.

    The shaded band spans the seeds (min to max), the solid line is their median in log
    space, the dashed line the mean-field prediction.
    """
    nrows, ncols = len(activations), len(inits)
    fig = new_figure(FIG_WIDTH, 1.25 * nrows + 0.7, constrained=False)
    _grid_margins(fig, left=0.75, top=0.25, bottom=0.45)
    axes = _panel_grid(fig, nrows, ncols)
    groups = {key: g for key, g in rows.groupby(["activation", "init"])}
    ymin, ymax = 0.0, 0.0
    for r, act in enumerate(activations):
        for c, init in enumerate(inits):
            ax: Axes = axes[r, c]
            g = groups.get((act, init))
            if g is None or g.empty:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            else:
                logs = g.assign(v=clipped_log10(g[measured]), t=clipped_log10(g[theory]))
                band = logs.groupby("layer")["v"].agg(["min", "median", "max"])
                ax.fill_between(band.index, band["min"], band["max"], color=color, alpha=0.35, lw=0)
                ax.plot(band.index, band["median"], color=color, lw=2.2, alpha=0.55)
                th = logs.groupby("layer")["t"].first()
                ax.plot(th.index, th.to_numpy(), color=THEORY_COLOR, lw=0.9, ls=(0, (3, 2)))
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
    axes[0, 0].set_ylim(ymin - pad, ymax + pad)
    axes[0, 0].xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    return fig


@styled
def growth_heatmaps(panels: Sequence[tuple[str, pd.DataFrame, pd.DataFrame | None]]) -> Figure:
    """Side-by-side heat maps of log10 growth; red explodes, blue vanishes, white is stable.

    Each panel is (title, measured pivot, theory pivot or None); cells show the measured
    value and, below it in brackets, the prediction. The colour scale is shared and centred
    on 0; inf/-inf sit at the ends of the scale, NaN is grey.
    """
    fig = new_figure(FIG_WIDTH, 0.5 * max(len(p[1]) for p in panels) + 1.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    finite = np.concatenate([p[1].to_numpy(dtype=float).ravel() for p in panels])
    finite = finite[np.isfinite(finite)]
    bound = float(min(max(np.abs(finite).max(initial=1.0), 1.0), LOG_CLIP))
    norm = TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#bdbdbd")
    image = None
    for ax, (title, measured, theory) in zip(axes, panels, strict=True):
        values = measured.to_numpy(dtype=float)
        shown = np.where(np.isposinf(values), bound, np.where(np.isneginf(values), -bound, values))
        image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, aspect="auto")
        ax.set_xticks(range(measured.shape[1]), list(measured.columns), rotation=30, ha="right")
        ax.set_yticks(range(measured.shape[0]), list(measured.index))
        ax.set_title(title)
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                text = _fmt(values[i, j])
                if theory is not None:
                    text += f"\n({_fmt(float(theory.to_numpy(dtype=float)[i, j]))})"
                dark = np.isfinite(shown[i, j]) and abs(shown[i, j]) > 0.6 * bound
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color="white" if dark else "black",
                )
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="log10(last / first variance)")
    return fig


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.1f}".replace("-0.0", "0.0") if abs(v) < 0.05 else f"{v:.1f}"


@styled
def precision_profiles(
    rows: pd.DataFrame, configs: Sequence[tuple[str, str]], dtypes: Sequence[str]
) -> Figure:
    """Per layer, the fraction of values that overflow, go subnormal or flush to zero.

    Rows are configurations, columns dtypes; solid lines are forward values (layer
    outputs), dashed lines gradients. A symmetric-log axis keeps 0 visible beside 1e-4.
    """
    fig = new_figure(FIG_WIDTH, 1.5 * len(configs) + 1.0, constrained=False)
    _grid_margins(fig, left=0.95, top=0.55, bottom=0.45)
    axes = _panel_grid(fig, len(configs), len(dtypes))
    for r, (act, init) in enumerate(configs):
        for c, dtype in enumerate(dtypes):
            ax: Axes = axes[r, c]
            g = rows[
                (rows["activation"] == act) & (rows["init"] == init) & (rows["dtype"] == dtype)
            ]
            if g.empty:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            else:
                mean = g.groupby("layer").mean(numeric_only=True)
                for event, color in EVENT_COLORS.items():
                    ax.plot(mean.index, mean[f"{event}_frac"], color=color, lw=1.1, label=event)
                    ax.plot(
                        mean.index,
                        mean[f"grad_{event}_frac"],
                        color=color,
                        lw=1.1,
                        ls="--",
                        label=f"{event} (grad)",
                    )
            ax.set_yscale("symlog", linthresh=1e-4)
            ax.set_ylim(0.0, 1.05)
            if r == 0:
                ax.set_title(dtype)
            if c == 0:
                ax.set_ylabel(f"{act} / {init}\nfraction")
            if r == len(configs) - 1:
                ax.set_xlabel("layer")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if not handles:
        for ax in axes.ravel():
            handles, labels = ax.get_legend_handles_labels()
            if handles:
                break
    if handles:
        fig.legend(handles, labels, loc="upper center", ncols=6, frameon=False)
    return fig


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


@styled
def throughput(bench: pd.DataFrame, group_cols: Sequence[str]) -> Figure:
    """Samples/s against batch (log-log, IQR bars) and efficiency against batch."""
    fig = new_figure(FIG_WIDTH, 3.6)
    left, right = fig.subplots(1, 2)
    for key, g in bench.groupby(list(group_cols), dropna=False):
        g = g.sort_values("batch_size")
        label = " / ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        x = g["batch_size"].to_numpy(dtype=float)
        y = g["samples_per_s"].to_numpy(dtype=float)
        lo = np.clip(y - g["samples_per_s_q1"].to_numpy(dtype=float), 0, None)
        hi = np.clip(g["samples_per_s_q3"].to_numpy(dtype=float) - y, 0, None)
        err = np.nan_to_num(np.vstack([lo, hi]))
        line = left.errorbar(x, y, yerr=err, marker="o", ms=3, lw=1.1, capsize=2, label=label)
        if "efficiency" in g and g["efficiency"].notna().any():
            right.plot(x, g["efficiency"], marker="o", ms=3, lw=1.1, color=line[0].get_color())
    batches = sorted(set(bench["batch_size"].astype(float)))
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(batches))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
    left.set_yscale("log")
    left.set_xlabel("batch size")
    left.set_ylabel("samples / s (median, IQR bars)")
    left.grid(alpha=0.3, which="both")
    left.legend()
    right.set_xlabel("batch size")
    right.set_ylabel("efficiency (achieved / same-run GEMM GFLOP/s)")
    right.set_ylim(bottom=0)
    right.grid(alpha=0.3)
    return fig


@styled
def history(efficiency: pd.DataFrame | None, stability: pd.DataFrame | None) -> Figure:
    """Across runs: median efficiency per benchmark group, and sweep verdict fractions."""
    panels = [
        (frame, xlabel, ylabel, top)
        for frame, xlabel, ylabel, top in (
            (efficiency, "benchmark run id", "median efficiency", None),
            (stability, "sweep run id", "fraction of configs in the run", 1.02),
        )
        if frame is not None and not frame.empty
    ]
    fig = new_figure(FIG_WIDTH, 3.0)
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for ax, (frame, xlabel, ylabel, top) in zip(axes, panels, strict=False):
        for column in frame.columns:
            ax.plot(frame.index, frame[column], marker="o", ms=3, label=str(column))
        ax.set_xticks(list(frame.index))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig
