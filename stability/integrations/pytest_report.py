"""What the pytest plugin's checks probed: one row per layer, written as CSV, JSON and a page.

A row names the test, the check, the emulated dtype (if a marker set one), the layer by its
qualified module name, the probe's statistics of that layer and whether the check passed.
"""

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from markupsafe import Markup
from matplotlib.figure import Figure as MplFigure

from stability.integrations.watch_report import Fig, write_page
from stability.report.figures import FORWARD_COLOR, clipped_log10, encode, new_figure, styled
from stability.report.sections.page import Table
from stability.results.files import write_csv, write_text
from stability.testing.layers import Layers

COLUMNS = ["test", "check", "dtype", "layer", "module", "act_var", "grad_var", "act_max_abs",
           "nonfinite", "overflow_frac", "grad_overflow_frac", "subnormal_frac", "outcome",
           "message"]  # fmt: skip
MAX_CURVES = 20
REPORT_FILES = ("stability_probed.csv", "stability_probed.json", "stability_probed.html")


def layer_rows(
    test: str,
    check: str,
    dtype: str | None,
    layers: Layers,
    outcome: str,
    message: str,
) -> list[dict[str, Any]]:
    """One row per layer the check read, by qualified module name."""
    return [
        {"test": test, "check": check, "dtype": dtype or "float32", "layer": s.layer,
         "module": name, "act_var": s.act_var, "grad_var": s.grad_var,
         "act_max_abs": s.act_max_abs, "nonfinite": s.nonfinite,
         "overflow_frac": s.overflow_frac, "grad_overflow_frac": s.grad_overflow_frac,
         "subnormal_frac": s.subnormal_frac, "outcome": outcome, "message": message}
        for s, name in zip(layers.stats, layers.names, strict=True)
    ]  # fmt: skip


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no inf/NaN: "inf", "nan" as strings
    if isinstance(v, torch.Tensor):
        return v.item()
    return v


@styled
def profile_figure(frame: pd.DataFrame) -> MplFigure:
    """log10 forward variance against the layer, one line per (test, check)."""
    fig = new_figure(height=3.4)
    ax = fig.subplots()
    for k, ((test, check), rows) in enumerate(frame.groupby(["test", "check"], sort=False)):
        if k >= MAX_CURVES:
            break
        label = f"{str(test).rsplit('::', 1)[-1]} / {check}"
        ax.plot(rows["layer"], clipped_log10(rows["act_var"]), marker="o", ms=2, lw=1,
                color=FORWARD_COLOR, alpha=0.3 + 0.7 / (1 + k), label=label)  # fmt: skip
    ax.set_xlabel("layer (1 = nearest the input)")
    ax.set_ylabel("log10 output variance")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=6)
    return fig


def write_probed(folder: Path, rows: list[dict[str, Any]]) -> list[Path]:
    """CSV, JSON and HTML of the rows in ``folder``; the paths written."""
    csv_path, json_path, html_path = (folder / name for name in REPORT_FILES)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    write_csv(frame, csv_path, "--stability-report CSV")
    clean = [{k: _json_value(v) for k, v in row.items()} for row in rows]
    write_text(json_path, json.dumps({"rows": clean}, indent=1), "--stability-report JSON")
    failed = frame[frame["outcome"] == "failed"]["test"].nunique()
    tests = frame["test"].nunique()
    verdict = (
        "Nothing was probed: no test used the stability fixtures."
        if frame.empty
        else f"{tests} tests probed, {failed} with a failed stability check."
    )
    figures = []
    if not frame.empty and frame["act_var"].notna().any():
        figures.append(Fig(encode(profile_figure(frame)), "forward variance per layer",
                           "Each line is one check of one test: a line that climbs or falls by "
                           "decades across the layers is a network that does not keep its "
                           "signal's scale."))  # fmt: skip
    table = None if frame.empty else Markup(Table("probed", "probed", frame, max_rows=500).html)
    title, meta = "Stability: what the tests probed", f"{len(frame)} layers probed"
    write_page(html_path, title, meta, verdict, figures, table, "Probed layers",
               what="--stability-report page")  # fmt: skip
    return [csv_path, json_path, html_path]
