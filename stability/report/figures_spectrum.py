"""Figures of the spectrum and phase-diagram sections: drawn from stored rows only."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from stability.report.figures import BACKWARD_COLOR, FORWARD_COLOR, THEORY_COLOR, new_figure, styled

LAW_COLORS = {"gaussian": BACKWARD_COLOR, "orthogonal": FORWARD_COLOR}


@styled
def spectrum_bands(rows: pd.DataFrame) -> Figure:
    """Per activation: the pooled log10 singular values against depth, 5-95 % and
    25-75 % bands and the median, one colour per weight law."""
    acts = list(dict.fromkeys(rows["activation"]))
    fig = new_figure(height=2.6)
    axes = fig.subplots(1, len(acts), sharey=True, squeeze=False)[0]
    for ax, act in zip(axes, acts, strict=True):
        for law, color in LAW_COLORS.items():
            part = rows[(rows["activation"] == act) & (rows["weights"] == law)].sort_values("depth")
            if part.empty:
                continue
            d = part["depth"].to_numpy(float)
            ax.fill_between(d, part["q05"], part["q95"], color=color, alpha=0.15, lw=0)
            ax.fill_between(d, part["q25"], part["q75"], color=color, alpha=0.3, lw=0)
            ax.plot(d, part["q50"], color=color, lw=1.2, label=law)
        ax.axhspan(-1, 1, color="#999999", alpha=0.12, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_ylim(-8, 2)
        ax.set_title(act)
        ax.set_xlabel("depth")
    axes[0].set_ylabel("log10 singular value of J")
    axes[0].legend(loc="lower left")
    return fig


@styled
def moment_agreement(rows: pd.DataFrame) -> Figure:
    """Measured against predicted normalised variance of J J^T's eigenvalues, per depth:
    filled where depth <= width/4 (judged), hollow beyond (finite width bends it)."""
    fig = new_figure(height=2.6)
    ax = fig.subplots()
    markers = {"identity": "o", "relu": "s", "tanh": "^"}
    for (act, law), part in rows.groupby(["activation", "weights"], sort=False):
        pred = part["predicted_jj_var"] / part["predicted_jj_mean"] ** 2
        meas = part["jj_var"] / part["jj_mean"] ** 2
        ok = (pred > 1e-6) & (meas > 1e-6)
        shallow = part["depth"] <= part["width"] / 4  # where the prediction is judged
        color = LAW_COLORS.get(str(law), THEORY_COLOR)
        marker = markers.get(str(act), "o")
        ax.scatter(pred[ok & shallow], meas[ok & shallow], marker=marker, s=14, color=color,
                   label=f"{act}, {law}")  # fmt: skip
        ax.scatter(pred[ok & ~shallow], meas[ok & ~shallow], marker=marker, s=14,
                   facecolors="none", edgecolors=color)  # fmt: skip
    lim = np.array([1e-2, 1e2])
    ax.plot(lim, lim, color=THEORY_COLOR, lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("predicted Var / mean^2 of J J^T eigenvalues")
    ax.set_ylabel("measured")
    ax.legend(fontsize=6, ncol=2)
    return fig


@styled
def phase_diagram(grid: pd.DataFrame, line: pd.DataFrame) -> Figure:
    """log10 xi_c over (sigma_w^2, sigma_b^2), the critical line, the measured points."""
    fig = new_figure(height=3.2)
    ax = fig.subplots()
    table = grid.pivot_table(index="sigma_b2", columns="sigma_w2", values="xi_c")
    values = np.log10(np.clip(table.to_numpy(float), 1e-2, 1e3))
    mesh = ax.pcolormesh(table.columns.to_numpy(float), table.index.to_numpy(float), values,
                         shading="nearest", cmap="viridis")  # fmt: skip
    fig.colorbar(mesh, ax=ax, label="log10 xi_c (predicted)")
    ax.plot(line["sigma_w2"], line["sigma_b2"], color="white", lw=1.5, label="chi_1 = 1")
    ax.set_xlim(float(table.columns.min()), float(table.columns.max()))
    ax.set_ylim(float(table.index.min()), float(table.index.max()))
    ax.set_xlabel("sigma_w^2")
    ax.set_ylabel("sigma_b^2")
    ax.text(0.05, 0.9, "ordered", transform=ax.transAxes, color="white")
    ax.text(0.8, 0.1, "chaotic", transform=ax.transAxes, color="white")
    ax.legend(loc="upper right")
    return fig
