"""The store's named queries for the report: every run's sweep rows, and whether a run exists.

``sweep_rows`` keeps the newest run per cell (what the atlas shows); ``sweep_history``
keeps every run's rows (what the history compares); ``has_run`` guards cache entries that
name a run of another or a replaced database.
"""

from pathlib import Path

from stability.results.store import Store


def test_sweep_history_keeps_every_run_of_a_repeated_cell(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        first = store.start_run("sweep", ["first"])
        store.write_cell(first, "a", [{"cell_key": "a", "layer": 1, "v": 1.0}], 0.1)
        second = store.start_run("sweep", ["second"])
        store.write_cell(second, "a", [{"cell_key": "a", "layer": 1, "v": 2.0}], 0.1)
        store.write_cell(second, "b", [{"cell_key": "b", "layer": 1, "v": 3.0}], 0.1)
        history = store.sweep_history()
        latest = store.sweep_rows()
    assert history["run_id"].tolist() == [first, second, second]
    assert history["v"].tolist() == [1.0, 2.0, 3.0]
    assert sorted(latest["v"]) == [2.0, 3.0]  # the newest run wins there, not here


def test_sweep_history_of_an_empty_store_is_empty(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        assert store.sweep_history().empty


def test_has_run(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        run_id = store.start_run("bench", ["pytest"])
        assert store.has_run(run_id)
        assert not store.has_run(run_id + 1)


def test_records_keep_each_named_table_per_run_and_the_report_reads_the_newest(
    tmp_path: Path,
) -> None:
    from stability.report.inputs import gather

    db = tmp_path / "s.db"
    with Store.open(db) as store:
        old = store.write_records_run("probe", ["old"], "cpu", {"probe": [{"m": "fc1", "v": 1.0}]})
        new = store.write_records_run(
            "probe", ["new"], "cpu", {"probe": [{"m": "fc1", "v": 2.0}, {"m": "fc2", "v": 3.0}]}
        )
        assert store.record_names() == ["probe"]
        assert store.records("probe")["run_id"].tolist() == [old, new, new]
        assert store.records("absent").empty
    data = gather(db, tmp_path, None)
    assert data.latest("probe")["v"].tolist() == [2.0, 3.0]
    assert data.latest("absent").empty


def test_a_store_written_before_records_existed_reads_as_no_records(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "s.db"
    with Store.open(db) as store:
        store.start_run("sweep", ["x"])
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE records")
    with Store.open(db, readonly=True) as store:
        assert store.record_names() == []
        assert store.records("probe").empty
