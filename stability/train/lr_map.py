"""The lr map read as a grid: one row per (activation, init), one column per learning rate.

``lr_search.lr_map`` gives one tidy row per trial; a person reads it as a grid, each row left
to right up to its last stable rate. The CLI prints this grid and the report shows it, so the
pivot lives here once.
"""

import numpy as np
import pandas as pd

STABLE = "ok"
DIVERGENT = "DIV"
CONFIG = ["activation", "init"]


def lr_map_grid(table: pd.DataFrame, *, sort: bool = False) -> pd.DataFrame:
    """``ok``/``DIV`` per (activation, init) row and learning-rate column (float labels).

    ``sort=False`` keeps the rows in the order the map ran its activations and inits (the
    order they were asked for); ``True`` sorts them by name.
    """
    cells = table.assign(cell=np.where(table["stable"].astype(bool), STABLE, DIVERGENT))
    return cells.pivot_table(index=CONFIG, columns="lr", values="cell", aggfunc="first", sort=sort)


def largest_stable_lr_tried(table: pd.DataFrame, *, sort: bool = False) -> pd.Series:
    """Per (activation, init), the largest learning rate of the map that trained; NaN if none.

    Indexed like ``lr_map_grid(table, sort=sort)``, so it can stand beside it as a column.
    """
    stable = table[table["stable"].astype(bool)]
    edge: pd.Series = stable.groupby(CONFIG)["lr"].max()
    return edge.reindex(lr_map_grid(table, sort=sort).index).rename("largest_stable_lr_tried")
