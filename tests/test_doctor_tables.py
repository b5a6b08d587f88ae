"""The doctor's tables outside the CLI: the lr-map grid, the loss-scaling view, the writers."""

import math
from pathlib import Path

import pandas as pd
import pytest

from stability.errors import StabilityError
from stability.results.store import Store
from stability.train.doctor import (
    Extras,
    doctor_csv_path,
    extra_tables,
    write_doctor_csvs,
    write_doctor_run,
)
from stability.train.loss_scaling import scaling_runs, zero_fractions_by_layer
from stability.train.lr_map import largest_stable_lr_tried, lr_map_grid
from stability.train.trainer import TrainConfig

# A map as lr_map() makes it: activations, then inits, in the order asked (not sorted);
# relu/xavier_normal never trains.
MAP = pd.DataFrame(
    [
        {"activation": act, "init": init, "lr": lr, "stable": stable}
        for act, init, lr, stable in [
            ("tanh", "xavier_normal", 0.01, True),
            ("tanh", "xavier_normal", 1.0, False),
            ("tanh", "kaiming_normal", 0.01, True),
            ("tanh", "kaiming_normal", 1.0, False),
            ("relu", "xavier_normal", 0.01, False),
            ("relu", "xavier_normal", 1.0, False),
            ("relu", "kaiming_normal", 0.01, True),
            ("relu", "kaiming_normal", 1.0, True),
        ]
    ]
)
RUN_ORDER = [
    ("tanh", "xavier_normal"),
    ("tanh", "kaiming_normal"),
    ("relu", "xavier_normal"),
    ("relu", "kaiming_normal"),
]


def test_lr_map_grid_keeps_run_order_unless_sorted() -> None:
    grid = lr_map_grid(MAP)
    assert list(grid.columns) == [0.01, 1.0]
    assert grid.index.tolist() == RUN_ORDER
    assert grid.values.tolist() == [["ok", "DIV"], ["ok", "DIV"], ["DIV", "DIV"], ["ok", "ok"]]
    assert lr_map_grid(MAP, sort=True).index.tolist() == sorted(RUN_ORDER)


def test_lr_map_grid_reads_stable_from_the_store_as_ints() -> None:
    """JSON rows read back may hold 0/1: the grid must not call 0 stable."""
    as_ints = MAP.assign(stable=MAP["stable"].astype(int))
    assert lr_map_grid(as_ints).equals(lr_map_grid(MAP))


def test_largest_stable_lr_tried_is_nan_where_nothing_trains() -> None:
    edge = largest_stable_lr_tried(MAP)
    assert edge.index.tolist() == RUN_ORDER  # row for row beside the grid
    assert edge[("tanh", "kaiming_normal")] == 0.01
    assert edge[("relu", "kaiming_normal")] == 1.0
    assert math.isnan(edge[("relu", "xavier_normal")])
    assert largest_stable_lr_tried(MAP, sort=True).index.tolist() == sorted(RUN_ORDER)


SCALING = pd.DataFrame(
    [
        {"loss_scaling": on, "layer": layer, "act_grad_zero_frac": a,
         "weight_grad_zero_frac": w, "final_loss": loss, "skipped_steps": skipped,
         "final_scale": scale}
        for on, loss, skipped, scale in [(False, 0.5, 0, 1.0), (True, 0.4, 2, 16384.0)]
        for layer, a, w in [(1, 0.1 if not on else 0.0, 0.2), (2, 0.3 if not on else 0.0, 0.4)]
    ]
)  # fmt: skip


def test_loss_scaling_views() -> None:
    wide = zero_fractions_by_layer(SCALING)
    assert wide.loc[1, "act_grad_zero_frac_unscaled"] == 0.1
    assert wide.loc[1, "act_grad_zero_frac_scaled"] == 0.0
    assert wide.loc[2, "weight_grad_zero_frac_scaled"] == 0.4
    runs = scaling_runs(SCALING.iloc[::-1])  # order in: scaled first; out: off, then on
    assert runs["loss_scaling"].tolist() == [False, True]
    assert runs["skipped_steps"].tolist() == [0, 2]
    assert runs["final_scale"].tolist() == [1.0, 16384.0]


def _tables() -> dict[str, pd.DataFrame]:
    return {
        "layers": pd.DataFrame({"layer": [1, 2], "where": ["layer 1", "head"]}),
        "diagnosis": pd.DataFrame({"status": ["stable"]}),
        "lr_map": MAP,
    }


def test_write_doctor_csvs_diagnosis_first_others_beside_it(tmp_path: Path) -> None:
    out = tmp_path / "new" / "doc.csv"
    written = write_doctor_csvs(out, _tables())
    assert written == [
        out,
        tmp_path / "new" / "doc-layers.csv",
        tmp_path / "new" / "doc-lr-map.csv",
    ]
    assert doctor_csv_path(out, "lr_map") == written[2]
    assert pd.read_csv(out)["status"].tolist() == ["stable"]
    assert pd.read_csv(written[2])["stable"].tolist() == MAP["stable"].tolist()


def test_write_doctor_csvs_needs_a_diagnosis(tmp_path: Path) -> None:
    with pytest.raises(StabilityError, match="'diagnosis' table"):
        write_doctor_csvs(tmp_path / "doc.csv", {"layers": pd.DataFrame()})
    assert not list(tmp_path.iterdir())


def test_write_doctor_run_stores_every_table_under_one_run(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        run_id = write_doctor_run(store, _tables(), ["stability", "doctor"], "cpu")
        assert store.runs()["kind"].tolist() == ["doctor"]
        lr_rows = store.doctor_rows("lr_map")
        assert lr_rows["run_id"].tolist() == [run_id] * len(MAP)
        assert lr_rows["lr"].tolist() == MAP["lr"].tolist()
        assert store.doctor_rows("diagnosis")["status"].tolist() == ["stable"]


def test_no_extras_run_no_studies() -> None:
    from stability.core.config import MLPConfig

    cfg = TrainConfig(MLPConfig(depth=1, width=4), steps=1, batch=4, samples=8)
    assert list(extra_tables(cfg, Extras())) == []
    kinds = [k for k, _ in extra_tables(cfg, Extras(lr_search=True, trial_steps=1))]
    assert kinds == ["lr_search"]
