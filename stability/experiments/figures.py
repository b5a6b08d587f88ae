"""The experiments' figures: one per experiment, drawn from its stored rows alone.

Built on ``matplotlib.figure.Figure`` (no pyplot, nothing global). Seeds are drawn as a
band: the shaded area spans the seeds (min to max), the line is their median. The CLI saves
these figures beside the CSVs; the report draws the same functions from the store's rows.
"""

from collections.abc import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from stability.experiments import depth, dropout, float16, polynomial, weight_decay

matplotlib.use("Agg")

WIDTH = 12.0  # inches: the report's content column at 100 dpi
TRAIN_COLOR, TEST_COLOR = "#1f5fa8", "#c2410c"
PALETTE = ("#1f5fa8", "#c2410c", "#2e7d32", "#7b1fa2", "#b8860b", "#555555")
VERDICT_COLORS = {"stable": "#2e7d32", "vanishes": "#1f5fa8", "explodes": "#c0262d",
                  "non-finite": "#111111"}  # fmt: skip


def _figure(height: float, panels: int) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(WIDTH, height), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    return fig, list(axes)


def band(ax: Axes, frame: pd.DataFrame, x: str, y: str, color: str, label: str,
         ls: str = "-") -> None:  # fmt: skip
    """Median over seeds as a line, min to max as a shaded band."""
    stats = frame.groupby(x)[y].agg(["min", "median", "max"]).sort_index()
    ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2, lw=0)
    ax.plot(stats.index, stats["median"], color=color, lw=1.5, ls=ls, label=label)


def _titled(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.legend(fontsize=7)


def draw_polynomial(rows: pd.DataFrame) -> Figure:
    """Train and test loss against epochs, one panel per model capacity."""
    fig, axes = _figure(3.0, len(polynomial.MODELS))
    for ax, (label, n) in zip(axes, polynomial.MODELS, strict=True):
        part = rows[(rows["features"] == n) & (rows["epoch"] > 0)]
        band(ax, part, "epoch", "train_loss", TRAIN_COLOR, "train")
        band(ax, part, "epoch", "test_loss", TEST_COLOR, "test", ls="--")
        ax.axhline(polynomial.NOISE**2 / 2, color="#999999", lw=0.8, ls=":",
                   label="noise floor σ²/2")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        _titled(ax, label, "epoch", "squared loss (y' - y)²/2")
    return fig


def draw_weight_decay(rows: pd.DataFrame) -> Figure:
    """λ = 0 against λ = 3 over epochs, the λ sweep at the end, and ||w|| shrinking."""
    fig, axes = _figure(3.0, 3)
    for lam, color in ((0.0, TRAIN_COLOR), (3.0, TEST_COLOR)):
        part = rows[(rows["lambda"] == lam) & (rows["epoch"] > 0)]
        band(axes[0], part, "epoch", "train_loss", color, f"train, λ={lam:g}", ls=":")
        band(axes[0], part, "epoch", "test_loss", color, f"test, λ={lam:g}")
    axes[0].set_yscale("log")
    _titled(axes[0], "λ = 0 against λ = 3", "epoch", "squared loss")
    final = weight_decay.finals(rows)
    shifted = final.assign(lam=final["lambda"].replace(0.0, 0.03))  # 0 drawn on a log axis
    band(axes[1], shifted, "lam", "train_loss", TRAIN_COLOR, "train")
    band(axes[1], shifted, "lam", "test_loss", TEST_COLOR, "test")
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    _titled(axes[1], "after 100 epochs, against λ (λ = 0 drawn at 0.03)", "λ", "squared loss")
    for k, lam in enumerate(sorted(rows["lambda"].unique())):
        band(axes[2], rows[rows["lambda"] == lam], "epoch", "w_norm",
             PALETTE[k % len(PALETTE)], f"λ={lam:g}")  # fmt: skip
    axes[2].set_yscale("log")
    _titled(axes[2], "the weights shrink", "epoch", "||w||")
    return fig


def draw_dropout(rows: pd.DataFrame) -> Figure:
    """Train and test accuracy against steps per p, and the final gap per seed."""
    fig, axes = _figure(3.0, 2)
    ps = sorted(rows["p"].unique())
    for k, p in enumerate(ps):
        part = rows[rows["p"] == p]
        color = PALETTE[k % len(PALETTE)]
        band(axes[0], part, "step", "train_acc", color, f"train, p={p:g}", ls=":")
        band(axes[0], part, "step", "test_acc", color, f"test, p={p:g}")
    _titled(axes[0], "accuracy (eval mode)", "step", "accuracy")
    final = dropout.finals(rows)
    for k, p in enumerate(ps):
        gaps = final[final["p"] == p]["gap"].to_numpy()
        jitter = np.linspace(-0.15, 0.15, len(gaps)) if len(gaps) > 1 else np.zeros(1)
        axes[1].scatter(k + jitter, gaps, color=PALETTE[k % len(PALETTE)], s=14)
        axes[1].hlines(np.median(gaps), k - 0.3, k + 0.3, color="black", lw=1.2)
    axes[1].set_xticks(range(len(ps)), [f"p={p:g}" for p in ps])
    axes[1].set_title("train - test accuracy gap at the end, per seed (bar: median)", fontsize=8)
    axes[1].set_ylabel("gap", fontsize=8)
    return fig


def draw_depth(rows: pd.DataFrame) -> Figure:
    """Per config: the loss left after the budget (a point per seed), coloured by verdict."""
    fig, axes = _figure(3.2, 1)
    ax = axes[0]
    configs = rows.drop_duplicates(["activation", "init", "depth"])
    for k, r in enumerate(configs.itertuples(index=False)):
        part = rows[(rows["activation"] == r.activation) & (rows["init"] == r.init)
                    & (rows["depth"] == r.depth)]  # fmt: skip
        ratios = np.minimum(part["loss_ratio"].astype(float).to_numpy(), 2.0)  # inf on the rim
        color = VERDICT_COLORS.get(str(r.verdict), "grey")
        jitter = np.linspace(-0.15, 0.15, len(ratios)) if len(ratios) > 1 else np.zeros(1)
        ax.scatter(k + jitter, ratios, color=color, s=16)
        ax.text(k, 2.05, f"verdict: {r.verdict}", ha="center", fontsize=7, color=color)
    ax.set_xticks(
        range(len(configs)),
        [f"{r.activation}\n{r.init}\ndepth {r.depth}" for r in configs.itertuples(index=False)],
        fontsize=7,
    )
    ax.axhline(depth.TRAINED, color="#2e7d32", lw=0.8, ls="--", label="trained below")
    ax.axhline(depth.STALLED, color="#1f5fa8", lw=0.8, ls=":", label="stalled above")
    ax.set_ylim(0, 2.2)
    _titled(
        ax,
        "loss left after the step budget (1 = learned nothing; diverged drawn at 2)",
        "",
        "final loss / loss of predicting 0",
    )
    return fig


def draw_float16(rows: pd.DataFrame, modes: Sequence[str] = float16.SHOWN) -> Figure:
    """Loss curves per mode, and per mode the zero fraction of each layer over time."""
    present = [m for m in modes if m in set(rows["mode"])]
    fig, axes = _figure(3.0, 1 + len(present))
    first = rows[rows["layer"] == 1]
    for k, mode in enumerate(present):
        band(axes[0], first[first["mode"] == mode], "step", "loss", PALETTE[k], mode)
    _titled(axes[0], "training loss", "step", "loss")
    for ax, mode in zip(axes[1:], present, strict=True):
        grid = rows[rows["mode"] == mode].pivot_table(
            index="layer", columns="step", values="zero_frac", aggfunc="mean"
        )
        steps = grid.columns.to_numpy(dtype=float)
        extent = (float(steps.min()), float(steps.max()), 0.5, float(grid.index.max()) + 0.5)
        image = ax.imshow(grid.to_numpy(), aspect="auto", origin="lower", vmin=0, vmax=1,
                          cmap="viridis", extent=extent)  # fmt: skip
        ax.grid(False)
        ax.set_title(f"{mode}: zero weight gradients", fontsize=8)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("layer (1 = bottom, last = head)", fontsize=8)
    if present:
        fig.colorbar(image, ax=axes[1:], label="fraction zero (mean over seeds)")
    return fig
