"""Outputs that are no regular file (issue 28's rule, met by issue 29's cases): a FIFO, a
device, a dangling link and a link loop are refused with one line and left as they were,
without blocking; ``/dev/null`` takes the output and stays the device; a symlink is written
through, to its target, and stays a link. Also the rule as a function, for every suffix
of the user's source and every side file of a store."""

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hostile import counts, sweep

from stability.cli import main
from stability.errors import StabilityError
from stability.results.files import (
    SOURCE_SUFFIXES,
    check_outputs,
    read_input,
    write_text,
)


def fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "rows.csv")
    return tmp / "rows.csv"


def dangling(tmp: Path) -> Path:
    (tmp / "rows.csv").symlink_to(tmp / "gone" / "rows.csv")
    return tmp / "rows.csv"


def loop(tmp: Path) -> Path:
    (tmp / "a.csv").symlink_to(tmp / "b.csv")
    (tmp / "b.csv").symlink_to(tmp / "a.csv")
    return tmp / "a.csv"


NODES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "fifo": (fifo, "is a FIFO (named pipe), not a regular file"),
    "device": (lambda tmp: Path("/dev/full"), "'/dev/full' is a device, not a regular file"),
    "dangling-link": (dangling, "does not exist; pass the target's path"),
    "link-loop": (loop, "is a symlink loop"),
}


def _sweep(db: Path, out: Path) -> list[str]:
    return [*sweep(), "--db", str(db), "--out", str(out)]


@pytest.mark.parametrize("kind", NODES)
def test_an_output_that_is_no_regular_file_is_refused_and_left_alone(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, words = NODES[kind]
    out = make(tmp_path)
    before = os.lstat(out)
    db = tmp_path / "s.db"
    assert main(_sweep(db, out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("stability: error: ") and words in err, err
    after = os.lstat(out)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert not db.exists(), "refused before the store was made"
    assert not (tmp_path / "gone").exists()


def test_dev_null_takes_the_output_and_stays_the_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = os.stat(os.devnull)
    assert main(_sweep(tmp_path / "s.db", Path(os.devnull))) == 0
    after = os.stat(os.devnull)
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino
    assert counts(tmp_path / "s.db")["cells"] == 1


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path: Path) -> None:
    target = tmp_path / "real" / "rows.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "rows.csv"
    link.symlink_to(target)
    assert main(_sweep(tmp_path / "s.db", link)) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(target.read_text().splitlines()) == 3  # the header and a row per layer


@pytest.mark.parametrize("suffix", [*SOURCE_SUFFIXES, ".PY", ".Py", ".IPYNB"])
def test_every_source_suffix_is_refused_in_any_case(suffix: str, tmp_path: Path) -> None:
    with pytest.raises(StabilityError, match="is Python source"):
        check_outputs({"--out": tmp_path / f"model{suffix}"})


@pytest.mark.parametrize("name", ["rows.csv", "model.py.csv", "python.txt", "notes.pyproject"])
def test_names_that_only_look_like_source_are_outputs(name: str, tmp_path: Path) -> None:
    check_outputs({"--out": tmp_path / name})  # no refusal


@pytest.mark.parametrize("side", ["-journal", "-wal", "-shm"])
def test_a_side_file_of_any_store_is_refused(side: str, tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    assert main(_sweep(db, tmp_path / "rows.csv")) == 0
    with pytest.raises(StabilityError, match=f"is the {side[1:]} file of the results database"):
        check_outputs({"--out": db.with_name(db.name + side)})  # not this command's store


def test_witness_a_plain_output_beside_a_store_is_written(tmp_path: Path) -> None:
    (tmp_path / "x.db").write_text("not a store")
    check_outputs({"--out": tmp_path / "x.db-wal"})  # no store there: an ordinary name
    write_text(tmp_path / "out.txt", "ok")
    assert (tmp_path / "out.txt").read_text() == "ok"


def test_read_input_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_bytes(b"x" * 101)
    assert read_input(path, "input", limit=101) == b"x" * 101
    with pytest.raises(StabilityError, match="over the input size limit"):
        read_input(path, "input", limit=100)
