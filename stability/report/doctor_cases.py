"""The divergence doctor's default cases for the report: three diagnoses and an lr map.

The notes' question "where do nan and inf come from?" answered on three small runs, one of
each kind: a stable run, a learning rate so large that a layer overflows to inf, and a
float16 network with N(0, 1) weights whose overflow becomes a NaN inside GELU. Beside them,
the stable/divergent map over learning rate x init x activation. Everything is written to
the store as ``doctor_rows`` (the tables ``stability doctor`` writes, plus a ``case`` column)
under a run whose command carries ``MARKER``, so the report can tell its own cases apart.
About 5 s on one core.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from stability.core.config import MLPConfig
from stability.measure.threads import threads
from stability.results.store import Store
from stability.train.doctor import diagnose, diagnosis_tables
from stability.train.lr_search import DEFAULT_MAP_LRS, lr_map
from stability.train.trainer import TrainConfig

MARKER = "(doctor defaults)"
VERSION = 1  # bump when the cases change: the runner's cache key
KINDS = ("diagnosis", "layers", "lr_map")
MAP_INITS = ("kaiming_normal", "xavier_normal", "standard_normal")
MAP_ACTIVATIONS = ("relu", "tanh")
MAP_TRIAL_STEPS = 50  # as `stability doctor --lr-map` by default


@dataclass(frozen=True)
class Case:
    """One diagnosed run: a short name, what it is meant to show, and its config."""

    name: str
    shows: str
    config: TrainConfig


def _cfg(lr: float, steps: int = 100, **model: Any) -> TrainConfig:
    return TrainConfig(MLPConfig(**{"depth": 10, "width": 64, **model}), lr=lr, steps=steps)


DEFAULT_CASES = (
    Case("stable", "a learning rate that trains", _cfg(0.01)),
    Case("overflow", "too large a learning rate: inf", _cfg(10.0)),
    Case(
        "not-a-number",  # not "nan": a CSV reader would take that for a missing value
        "float16 with N(0, 1) weights: inf, then NaN",
        _cfg(0.01, depth=8, width=32, activation="gelu", init="standard_normal", dtype="float16"),
    ),
)
MAP_BASE = _cfg(0.01, steps=MAP_TRIAL_STEPS)


def compute(
    cases: Sequence[Case] = DEFAULT_CASES,
    map_base: TrainConfig = MAP_BASE,
    lrs: Sequence[float] = DEFAULT_MAP_LRS,
    inits: Sequence[str] = MAP_INITS,
    activations: Sequence[str] = MAP_ACTIVATIONS,
) -> dict[str, pd.DataFrame]:
    """Diagnose every case and draw the lr map, on one thread (the same on any machine)."""
    with threads(1):
        verdicts, layers = [], []
        for case in cases:
            diag = diagnose(case.config)
            verdict, per_layer = diagnosis_tables(diag)
            advice = diag.advice() if diag.status != "stable" else "none needed"
            verdicts.append(verdict.assign(case=case.name, shows=case.shows, advice=advice))
            layers.append(per_layer.assign(case=case.name))
        table = lr_map(map_base, lrs=lrs, inits=inits, activations=activations)
    return {
        "diagnosis": pd.concat(verdicts, ignore_index=True),
        "layers": pd.concat(layers, ignore_index=True),
        "lr_map": table,
    }


def write(store: Store, tables: dict[str, pd.DataFrame], command: Sequence[str] = ()) -> int:
    """Store the tables under a new doctor run marked as the report's; its run id."""
    records = {
        kind: [{str(k): v for k, v in r.items()} for r in table.to_dict("records")]
        for kind, table in tables.items()
    }
    return store.write_doctor_run([*(command or ["stability", "report"]), MARKER], "cpu", records)
