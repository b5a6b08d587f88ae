"""The report's "Width and depth scaling" section: not run without a coordinate check in
the store; with one, a figure per axis measured, the drifting modules' table, a verdict."""

from pathlib import Path

import pytest

from stability.cli import main
from stability.report.inputs import gather
from stability.report.sections.scaling import NOT_RUN, scaling


def test_not_run_without_a_coord_check(tmp_path: Path) -> None:
    section = scaling(gather(tmp_path / "none.db", tmp_path, None))
    assert section.status == "not run" and NOT_RUN in section.notes


@pytest.mark.parametrize(("param", "health"), [("mup", "pass"), ("sp", "warn")])
def test_drawn_from_the_newest_run(tmp_path: Path, param: str, health: str) -> None:
    db = tmp_path / "s.db"
    sizes = ["--widths", "16,32,64,128", "--steps", "1,2", "--seeds", "3"]
    argv = ["coord-check", *sizes, "--param", param, "--quiet", "--db", str(db),
            "--out", str(tmp_path / "f.csv")]  # fmt: skip
    assert main(argv) == 0
    section = scaling(gather(db, tmp_path, None))
    assert section.status == "complete" and section.health == health
    assert len(section.figures) == 1 and section.figures[0].uri.startswith("data:image/svg")
    assert len(section.tables) == (param == "sp")
    if param == "sp":
        assert "readout" in set(section.tables[0].frame["module"])
    assert "module checks scale-stable" in section.verdict
