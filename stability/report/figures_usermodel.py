"""The "Your model" figure: one x position per watched module, in forward order, by name.

Top: log10 of the forward variance and of the gradient's variance per module, so a residual
stream's growth, a LayerNorm's reset to 1 and a gradient that fades show as shapes. Bottom:
binades of float16 and bfloat16 headroom before overflow (below 0: the value would be inf),
forward and gradient; bars past ``HEADROOM_CLIP`` are drawn at it (only the near ones matter).
"""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from stability.report.figures import (
    BACKWARD_COLOR,
    FORWARD_COLOR,
    clipped_log10,
    new_figure,
    styled,
)

HEADROOM_CLIP = 32.0  # binades; bfloat16 has float32's range, so its headroom is often ~120
MAX_LABELS = 60  # more modules than this: label every k-th, so names stay readable


@styled
def module_profile(rows: pd.DataFrame) -> Figure:
    """Variance (log10) and float16/bfloat16 headroom per module; ``rows`` from a probe."""
    rows = rows.sort_values("order").reset_index(drop=True)
    x = np.arange(len(rows))
    fig = new_figure(height=6.0)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    top.plot(x, clipped_log10(rows["fwd_var"]), "o-", ms=3, color=FORWARD_COLOR, label="forward")
    top.plot(x, clipped_log10(rows["bwd_var"]), "s-", ms=3, color=BACKWARD_COLOR, label="gradient")
    bad = rows["verdict"].astype(str) != "stable"
    for i in x[bad.to_numpy()]:
        top.axvspan(i - 0.5, i + 0.5, color="#c0262d", alpha=0.12, lw=0)
    top.set_ylabel("log10 variance")
    top.legend(loc="best")
    top.grid(alpha=0.3)
    width = 0.2
    series = [
        ("fwd_f16_headroom", "float16 forward", FORWARD_COLOR, 1.0),
        ("bwd_f16_headroom", "float16 gradient", BACKWARD_COLOR, 1.0),
        ("fwd_bf16_headroom", "bfloat16 forward", FORWARD_COLOR, 0.4),
        ("bwd_bf16_headroom", "bfloat16 gradient", BACKWARD_COLOR, 0.4),
    ]
    for k, (column, label, color, alpha) in enumerate(series):
        values = np.clip(rows[column].astype(float).to_numpy(), -HEADROOM_CLIP, HEADROOM_CLIP)
        bottom.bar(x + (k - 1.5) * width, values, width, color=color, alpha=alpha, label=label)
    bottom.axhline(0, color="#c0262d", lw=1)
    bottom.set_ylabel("binades to overflow")
    bottom.legend(loc="best", ncols=4)
    bottom.grid(alpha=0.3, axis="y")
    step = max(1, -(-len(rows) // MAX_LABELS))
    bottom.set_xticks(x[::step], [str(m) for m in rows["module"]][::step], rotation=90)
    return fig
