"""``stability probe``'s bad input: one line naming what failed and where, exit 2, and the
store exactly as it was (a run stored before the bad command is still there, byte for byte).

The user's module is a file in the working directory, as for a user running the command
beside their code (the working directory is importable)."""

import hashlib
from pathlib import Path

import pytest

from stability.cli import main

USER_MODULE = """
import torch
from torch import nn

def build(width=8):
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 3))

def boom():
    raise RuntimeError("needs a GPU")

def not_a_module():
    return 3

def batch():
    return torch.randn(4, 8), torch.randint(0, 3, (4,))

def bad_batch():
    return "not a tensor"
"""
GOOD = ["--model", "umod_bad:build", "--input", "4x8:float32"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder with their module and one good probe already stored (made once:
    every case leaves it as it was, which is what the cases check)."""
    path = tmp_path_factory.mktemp("user")
    (path / "umod_bad.py").write_text(USER_MODULE)
    (path / "broken.py").write_text("import a_package_that_is_not_installed\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(path)
        assert main(["probe", *GOOD, "--db", "s.db", "--out", "first.csv"]) == 0
    return path


@pytest.fixture
def project(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(folder)
    return folder


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# (id, arguments, words the one line must hold)
CASES = [
    ("module-does-not-import", ["--model", "broken:build", "--input", "4x8"],
     ["--model", "'broken:build'", "does not import", "a_package_that_is_not_installed"]),
    ("no-such-module", ["--model", "nowhere:build", "--input", "4x8"],
     ["'nowhere'", "does not import", "ModuleNotFoundError"]),
    ("attribute-missing", ["--model", "umod_bad:biuld", "--input", "4x8"],
     ["umod_bad has no attribute 'biuld'", "umod_bad.py"]),
    ("no-colon", ["--model", "umod_bad", "--input", "4x8"], ["'umod_bad'", "pkg.module:name"]),
    ("factory-raises", ["--model", "umod_bad:boom", "--input", "4x8"],
     ["factory raised RuntimeError: needs a GPU", "umod_bad.py:9"]),
    ("not-a-module", ["--model", "umod_bad:not_a_module", "--input", "4x8"],
     ["returned a int", "not a torch.nn.Module"]),
    ("bad-json", [*GOOD, "--model-args", "{width: 8}"], ["--model-args", "not valid JSON"]),
    ("json-not-object", [*GOOD, "--model-args", "[8]"], ["--model-args", "JSON object"]),
    ("factory-bad-kwarg", [*GOOD, "--model-args", '{"depth": 3}'],
     ["factory raised TypeError", "depth"]),
    ("shape-does-not-fit", ["--model", "umod_bad:build", "--input", "4x9:float32"],
     ["--input '4x9:float32' does not fit", "in module 0 (Linear)", "4x9 and 8x8"]),
    ("bad-shape", ["--model", "umod_bad:build", "--input", "4xa"], ["shape '4xa'", "32x3x28x28"]),
    ("bad-dtype", ["--model", "umod_bad:build", "--input", "4x8:float8"],
     ["--input dtype 'float8'", "bfloat16"]),
    ("int-without-bound", ["--model", "umod_bad:build", "--input", "4x8:int64"],
     ["integer dtype needs an upper bound"]),
    ("no-input", ["--model", "umod_bad:build"], ["--model needs --input"]),
    ("batch-not-tensor", ["--model", "umod_bad:build", "--input", "umod_bad:bad_batch"],
     ["returned str", "expected a tensor"]),
    ("unknown-loss", [*GOOD, "--loss", "hinge"], ["--loss 'hinge'", "cross_entropy", "mse"]),
    ("target-does-not-fit", [*GOOD, "--loss", "cross_entropy", "--target", "5:int64:3"],
     ["--loss cross_entropy does not fit", "(4, 3)", "(5,)"]),
    ("unknown-verdict", [*GOOD, "--fail-on", "explode"], ["verdict 'explode'", "explodes"]),
    ("glob-matches-nothing", [*GOOD, "--modules", "encoder.*"],
     ["--modules encoder.* matches no module", "names look like"]),
]  # fmt: skip


@pytest.mark.parametrize(("args", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_store_intact(
    project: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: list[str]
) -> None:
    capsys.readouterr()
    before = digest(project / "s.db")
    code = main(["probe", *args, "--db", "s.db", "--out", "second.csv"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stability: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert digest(project / "s.db") == before  # nothing stored is lost, nothing is added
    assert not (project / "second.csv").exists() and not (project / "second.json").exists()


def test_a_good_probe_does_change_the_store(project: Path, tmp_path: Path) -> None:
    """The witness that the digest check can fail (on a copy: the cases share the store)."""
    copy = tmp_path / "copy.db"
    copy.write_bytes((project / "s.db").read_bytes())
    before = digest(copy)
    assert main(["probe", *GOOD, "--db", str(copy), "--out", str(tmp_path / "o.csv")]) == 0
    assert digest(copy) != before
