"""Validate the finite-width band (core/finite_width.py) against many seeds.

For each activation/init pair and width, run ``--seeds`` probe networks and count how
often the measured log10 variance falls inside the predicted 90 % band: at the deepest
layer forward (pre-activation variance, layer L) and backward (gradient variance, layer
1), and over every layer. Writes a CSV table and a figure (coverage against width).

    PYTHONPATH=$PWD python scripts/band_coverage.py --out docs/band-coverage
"""

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from stability.core.config import MLPConfig
from stability.core.finite_width import COVERAGE, Z_COVERAGE
from stability.core.stacked import probe_stack
from stability.sweep.cells import Cell, cell_rows

PAIRS = (
    ("relu", "kaiming_normal"),
    ("leaky_relu", "kaiming_normal"),
    ("tanh", "xavier_normal"),
    ("selu", "lecun_normal"),
    ("gelu", "kaiming_normal"),
    ("softplus", "kaiming_normal"),
    ("silu", "kaiming_normal"),
)
STACK = 8  # seeds probed as one stacked network (core/stacked.py: the same rows, ~2x faster)


def inside(rows: pd.DataFrame, measured: str, lo: str, hi: str) -> pd.Series:
    v = np.log10(rows[measured].astype(float))
    return (v >= rows[lo]) & (v <= rows[hi])


def half_width(rows: pd.DataFrame, what: str) -> float:
    """The band's predicted sd of log10 variance (its half width over the z quantile)."""
    hi, lo = rows[f"pred_log10_{what}_var_hi"].iloc[0], rows[f"pred_log10_{what}_var_lo"].iloc[0]
    return float((hi - lo) / (2 * Z_COVERAGE))


def seed_rows(config: MLPConfig, seeds: int, batch: int) -> list[dict[str, object]]:
    """Every row of seeds 0..seeds-1 of ``config``, probed ``STACK`` seeds at a time."""
    out: list[dict[str, object]] = []
    for start in range(0, seeds, STACK):
        configs = [replace(config, seed=s) for s in range(start, min(start + STACK, seeds))]
        stats = probe_stack(configs, batch)
        for c, s in zip(configs, stats, strict=True):
            out.extend(cell_rows(Cell(c, batch), s))
    return out


def coverage(pairs: list[tuple[str, str]], widths: list[int], seeds: int, depth: int,
             batch: int) -> pd.DataFrame:  # fmt: skip
    out = []
    for act, init in pairs:
        for width in widths:
            start = time.monotonic()
            rows = pd.DataFrame(seed_rows(MLPConfig(depth, width, act, init), seeds, batch))
            fwd = inside(rows, "preact_var", "pred_log10_preact_var_lo", "pred_log10_preact_var_hi")
            bwd = inside(rows, "grad_var", "pred_log10_grad_var_lo", "pred_log10_grad_var_hi")
            top, bottom = rows["layer"] == depth, rows["layer"] == 1
            last = np.log10(rows.loc[top, "preact_var"].astype(float))
            first = np.log10(rows.loc[bottom, "grad_var"].astype(float))
            out.append(
                {
                    "activation": act,
                    "init": init,
                    "width": width,
                    "seeds": seeds,
                    "fwd_last_inside": float(fwd[top].mean()),
                    "bwd_first_inside": float(bwd[bottom].mean()),
                    "fwd_all_inside": float(fwd.mean()),
                    "bwd_all_inside": float(bwd[~top].mean()),
                    "fwd_last_sd_measured": float(last.std(ddof=1)),
                    "fwd_last_sd_predicted": half_width(rows[top], "preact"),
                    "bwd_first_sd_measured": float(first.std(ddof=1)),
                    "bwd_first_sd_predicted": half_width(rows[bottom], "grad"),
                    "caveat": bool((rows["theory_caveat"] != "").any()),
                }
            )
            print(f"{act}/{init} width {width}: {time.monotonic() - start:.0f} s", file=sys.stderr)
    return pd.DataFrame(out)


def figure(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, col, title in (
        (axes[0], "fwd_last_inside", "forward, last layer"),
        (axes[1], "bwd_first_inside", "backward, first layer"),
    ):
        for (act, init), g in table.groupby(["activation", "init"], sort=False):
            ls = ":" if g["caveat"].any() else "-"
            ax.plot(g["width"], g[col], marker="o", ls=ls, label=f"{act}/{init}")
        seeds = int(table["seeds"].iloc[0])
        sd = math.sqrt(COVERAGE * (1 - COVERAGE) / seeds)
        ax.axhspan(COVERAGE - 2 * sd, COVERAGE + 2 * sd, color="#2e7d32", alpha=0.15, lw=0)
        ax.axhline(COVERAGE, color="#2e7d32", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_title(title)
        ax.set_xlabel("width")
    axes[0].set_ylabel(f"fraction of seeds inside the {COVERAGE:.0%} band")
    axes[1].legend(fontsize=7, frameon=False)
    fig.suptitle("Finite-width band: measured coverage (dotted: configs with a caveat)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="64,128,256,512,1024")
    parser.add_argument("--seeds", type=int, default=24)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", default="docs/band-coverage")
    parser.add_argument(
        "--pairs", default="", help="activation/init,... (default: all); replaces their rows"
    )
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    pairs = [tuple(p.split("/")) for p in args.pairs.split(",") if p] or list(PAIRS)
    table = coverage(pairs, widths, args.seeds, args.depth, args.batch)  # type: ignore[arg-type]
    out = Path(args.out)
    if args.pairs and out.with_suffix(".csv").exists():  # keep the other pairs' rows
        old = pd.read_csv(out.with_suffix(".csv"))
        rerun = set(zip(table["activation"], table["init"], strict=True))
        keep = [(a, i) not in rerun for a, i in zip(old["activation"], old["init"], strict=True)]
        table = pd.concat([old[keep], table], ignore_index=True)
    table.to_csv(out.with_suffix(".csv"), index=False, float_format="%.3f")
    figure(table, out.with_suffix(".png"))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
