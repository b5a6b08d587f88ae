"""``Watch.to_frame``: the recorded history as one tidy pandas frame (or a wide one).

Tidy is one row per (step, module, stat) with its ``value``, so a plot is a ``groupby``
away; modules keep the watch's forward-hook order and stats their ``STATS`` order.
"""

from collections.abc import Sequence

import pandas as pd

from stability.core.probe import LayerStats
from stability.integrations.scalars import STATS


def _float(v: float | int) -> float:
    return float(v) if not isinstance(v, float) else v


def history_frame(
    history: Sequence[tuple[int, str, LayerStats]], modules: Sequence[str], wide: bool
) -> pd.DataFrame:
    """``history`` ((step, module, stats) triples) tidy, or one row per (step, module)."""
    order = {name: i for i, name in enumerate(modules)}
    rows = [
        {"step": step, "module": name, "order": order[name],
         **{k: _float(getattr(stats, k)) for k in STATS}}
        for step, name, stats in history
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["step", "module", "order", *STATS])
    if wide:
        return frame.drop(columns="order")
    tidy = frame.melt(id_vars=["step", "module", "order"], var_name="stat", value_name="value")
    tidy["stat"] = pd.Categorical(tidy["stat"], categories=list(STATS), ordered=True)
    tidy = tidy.sort_values(["step", "order", "stat"], kind="stable")
    tidy["stat"] = tidy["stat"].astype(str)
    return tidy.drop(columns="order").reset_index(drop=True)
