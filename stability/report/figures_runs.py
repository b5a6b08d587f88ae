"""Figures of runs: precision events per layer, throughput, and history across runs.

Every panel carries a legend and its units; a panel with nothing to draw says why in the
panel itself (all zero, not run) rather than staying blank.
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

from stability.report.figures import (
    EVENT_COLORS,
    FIG_WIDTH,
    grid_margins,
    new_figure,
    panel_grid,
    styled,
)

EVENT_COLUMNS = [
    "overflow_frac", "subnormal_frac", "flush_frac",
    "grad_overflow_frac", "grad_subnormal_frac", "grad_flush_frac",
]  # fmt: skip
ALL_ZERO = "all zero: no value overflowed,\nwent subnormal or flushed"


@styled
def precision_profiles(
    rows: pd.DataFrame, configs: Sequence[tuple[str, str]], dtypes: Sequence[str]
) -> Figure:
    """Per layer, the fraction of values that overflow, go subnormal or flush to zero.

    Rows are configurations, columns dtypes; solid lines are forward values (layer
    outputs), dashed lines gradients. A symmetric-log axis keeps 0 visible beside 1e-4.
    """
    fig = new_figure(FIG_WIDTH, 1.5 * len(configs) + 1.0, constrained=False)
    grid_margins(fig, left=0.95, top=0.55, bottom=0.45)
    axes = panel_grid(fig, len(configs), len(dtypes))
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
                if not mean[EVENT_COLUMNS].to_numpy().any():
                    ax.text(0.5, 0.55, ALL_ZERO, ha="center", va="center", color="#555555",
                            transform=ax.transAxes)  # fmt: skip
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
            right.plot(x, g["efficiency"], marker="o", ms=3, lw=1.1, color=line[0].get_color(),
                       label=label)  # fmt: skip
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
    right.set_ylabel("efficiency (achieved / same-run GEMM GFLOP/s, ratio)")
    right.set_ylim(bottom=0)
    right.grid(alpha=0.3)
    if right.get_legend_handles_labels()[0]:
        right.legend()
    else:
        right.text(0.5, 0.5, "no efficiency recorded", ha="center", transform=right.transAxes)
    return fig


@styled
def history(efficiency: pd.DataFrame | None, grids: Sequence[tuple[str, pd.DataFrame]]) -> Figure:
    """Across runs: median efficiency per benchmark group, then one panel per sweep grid with
    the share of its configs per verdict; runs of different grids are never joined."""
    panels: list[tuple[str, pd.DataFrame, str, str, float | None]] = []
    if efficiency is not None and not efficiency.empty:
        panels.append(("benchmarks", efficiency, "benchmark run id", "median efficiency (ratio)",
                       None))  # fmt: skip
    for label, shares in grids:
        panels.append((label, shares, "sweep run id", "share of the grid's configs", 1.02))
    fig = new_figure(FIG_WIDTH, 3.0)
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for ax, (title, frame, xlabel, ylabel, top) in zip(axes, panels, strict=False):
        for column in frame.columns:
            ax.plot(frame.index, frame[column], marker="o", ms=3, label=str(column))
        ax.set_xticks(list(frame.index))
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig
