"""The doctor's optional studies of one config, each a table: cost, lr search, lr map, scaling.

They run after the diagnosis and one after another, each yielded as it ends, so a caller can
show a result while the next (possibly long) study runs.
"""

from collections.abc import Iterator
from dataclasses import dataclass, replace

import pandas as pd

from stability.train.doctor.cost import compare_cost
from stability.train.loss_scaling import compare_loss_scaling
from stability.train.lr_search import DEFAULT_MAP_LRS, lr_map, lr_search_grid
from stability.train.trainer import TrainConfig

MAP_INITS = ("kaiming_normal", "xavier_normal", "standard_normal")
MAP_ACTIVATIONS = ("relu", "tanh")
TRIAL_STEPS = 50


@dataclass(frozen=True)
class Extras:
    """Which studies to run besides the diagnosis, and the lr map's grid.

    ``trial_steps`` bounds each lr-search and lr-map trial (a trial is a whole short run).
    """

    cost: bool = False
    lr_search: bool = False
    lr_map: bool = False
    loss_scaling: bool = False
    trial_steps: int = TRIAL_STEPS
    lrs: tuple[float, ...] = DEFAULT_MAP_LRS
    map_inits: tuple[str, ...] = MAP_INITS
    map_activations: tuple[str, ...] = MAP_ACTIVATIONS


def extra_tables(cfg: TrainConfig, extras: Extras) -> Iterator[tuple[str, pd.DataFrame]]:
    """Each requested study of ``cfg`` in turn, as (table kind, table)."""
    if extras.cost:
        cost = compare_cost(cfg)
        yield "cost", pd.DataFrame([{**cfg.as_dict(), **cost.as_dict()}])
    if extras.lr_search:
        yield "lr_search", lr_search_grid([cfg], steps=extras.trial_steps, start=cfg.lr)
    if extras.lr_map:
        yield (
            "lr_map",
            lr_map(
                replace(cfg, steps=extras.trial_steps),
                lrs=extras.lrs,
                inits=extras.map_inits,
                activations=extras.map_activations,
            ),
        )
    if extras.loss_scaling:
        yield "loss_scaling", compare_loss_scaling(cfg)
