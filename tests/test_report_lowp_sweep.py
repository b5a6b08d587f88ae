"""Section 17: the sweep's low-precision networks, from a real ``stability sweep --dtype``.

Two networks of depth 12 in float8_e4m3fn: relu with Kaiming (scale kept) and relu with the
notes' N(0, 0.01^2) (every layer shrinks the signal 50x). Without scaling (``--recipe
none``) the second one's gradients flush to zero, so its layers keep bf16; per-tensor
scaling rescues it. The section must say which, from the records alone.
"""

import math
from pathlib import Path

import pandas as pd
import pytest

from stability.cli import main
from stability.report.inputs import gather
from stability.report.sections.lowp_sweep import lowp_sweep, newest_per_network

ROOT = Path(__file__).resolve().parents[1]
GRID = ["--activation", "relu", "--init", "kaiming_normal,normal", "--depth", "12",
        "--width", "32", "--batch", "16", "--seeds", "0", "--dtype", "float8_e4m3fn",
        "--quiet"]  # fmt: skip


def _sweep(folder: Path, recipe: str) -> Path:
    folder.mkdir()
    db = folder / "s.db"
    args = ["sweep", *GRID, "--recipe", recipe, "--db", str(db), "--out", str(folder / "s.csv")]
    assert main(args) == 0
    return folder


@pytest.fixture(scope="module")
def unscaled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _sweep(tmp_path_factory.mktemp("lowp") / "none", "none")


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _sweep(tmp_path_factory.mktemp("lowp") / "tensor", "tensor")


def test_unscaled_vanishing_network_keeps_bf16_and_the_section_warns(unscaled: Path) -> None:
    section = lowp_sweep(gather(unscaled / "s.db", ROOT, None))
    assert section.status == "complete" and section.health == "warn"
    assert "relu/normal" in section.reason and "keep bf16" in section.reason
    assert section.verdict == "1 of 2 networks run every layer in a format asked"
    table = section.tables[0].frame.set_index("init")
    assert table.loc["kaiming_normal", "bf16_layers"] == 0
    assert table.loc["kaiming_normal", "advised_layers"] == 12
    assert table.loc["normal", "bf16_layers"] > 0
    assert table.loc["normal", "max_flush"] > table.loc["kaiming_normal", "max_flush"]
    assert len(section.figures) == 1 and section.figures[0].uri.startswith("data:image/svg")


def test_scaled_formats_pass_every_network(scaled: Path) -> None:
    section = lowp_sweep(gather(scaled / "s.db", ROOT, None))
    assert section.health == "pass"
    assert section.verdict == "2 of 2 networks run every layer in a format asked"


def test_minima_are_the_csv_rows_worst_layers(unscaled: Path) -> None:
    """The table's minima against the sweep's own CSV, read row by row."""
    section = lowp_sweep(gather(unscaled / "s.db", ROOT, None))
    csv = pd.read_csv(unscaled / "s-formats.csv")
    for _, line in section.tables[0].frame.iterrows():
        mine = csv[(csv["init"] == line["init"]) & (csv["tensor"] == "output")]
        worst = min(mine.itertuples(), key=lambda r: r.sqnr_db)
        assert math.isclose(line["min_output_sqnr_db"], worst.sqnr_db, rel_tol=1e-12)
        assert line["worst_layer"] == worst.layer
        assert line["max_flush"] == csv[csv["init"] == line["init"]]["flush_frac"].max()


def test_no_low_precision_sweep_is_not_run_with_the_command(tmp_path: Path) -> None:
    section = lowp_sweep(gather(tmp_path / "none.db", ROOT, None))
    assert section.status == "not run"
    assert "stability sweep --dtype" in section.notes[0]


def test_a_resumed_grid_shows_each_network_from_its_newest_run() -> None:
    frame = pd.DataFrame({"mlp_key": ["a", "a", "b"], "run_id": [1, 2, 1], "x": [0, 1, 2]})
    assert newest_per_network(frame)["x"].tolist() == [1, 2]
