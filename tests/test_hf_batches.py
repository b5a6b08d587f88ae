"""Batches as a user's code returns them, outputs as models return them, and user code
behind a fence: one line and exit 2 (130 for Ctrl-C), stdout kept for ``--json``.

Plain torch models in a user's folder (the working directory is importable), so each case
is a few milliseconds; the Hugging Face architectures are in test_hf_cli.py."""

import json
from pathlib import Path

import pytest

from stability.cli import main

USER_MODULE = '''
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

class Keywords(nn.Module):
    """model(x, mask=None, scale=1.0): keyword arguments, None allowed, a dict output."""
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
    def forward(self, x, mask=None, scale=1.0):
        y = self.fc(x) * scale
        if mask is not None:
            y = y * mask
        return {"logits": y, "hidden": x}

def build():
    torch.manual_seed(0)
    return Keywords()

def detached():
    class Argmax(Keywords):
        def forward(self, x, mask=None, scale=1.0):
            return self.fc(x).argmax(-1)
    return Argmax()

def tensor():
    return torch.randn(2, 4, generator=torch.Generator().manual_seed(0))

def kwargs():
    return {"x": tensor(), "mask": torch.ones(2, 3)}

def positional():
    return (tensor(), None, 2.0)

def args_kwargs():
    return ((tensor(),), {"scale": 2.0})

def pair():
    return tensor(), torch.randn(2, 3)

def legacy():
    return {"input": tensor(), "target": torch.randn(2, 3)}

loader = DataLoader(TensorDataset(torch.randn(6, 4), torch.randn(6, 3)), batch_size=2)

def make_loader():
    return loader

def stops():
    raise SystemExit(4)

def interrupted():
    raise KeyboardInterrupt
'''
NOISY = "print('hello from the import')\nfrom umod_batches import *\n"
EXITS = "import sys\nsys.exit(3)\n"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "umod_batches.py").write_text(USER_MODULE)
    (tmp_path / "umod_noisy.py").write_text(NOISY)
    (tmp_path / "umod_exits.py").write_text(EXITS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def probe(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["probe", "--model", "umod_batches:build", *args, "--db", "s.db",
                 "--out", "p.csv"])  # fmt: skip
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fc_var(project: Path) -> float:
    rows = json.loads((project / "p.json").read_text())["rows"]
    return float(next(r for r in rows if r["module"] == "fc")["fwd_var"])


@pytest.mark.parametrize(
    "batch", ["tensor", "kwargs", "positional", "args_kwargs", "pair", "legacy", "loader",
              "make_loader"],
)  # fmt: skip
def test_every_batch_form_probes(
    project: Path, capsys: pytest.CaptureFixture[str], batch: str
) -> None:
    code, out, err = probe(capsys, "--input", f"umod_batches:{batch}", "--loss", "mse")
    assert code == 0, err
    assert fc_var(project) > 0
    # A legacy (input, target) pair or dict is the loss's target; otherwise one is made.
    paired = batch in ("pair", "legacy", "loader", "make_loader")
    against = "the target (2, 3)" if paired else "a made"
    assert f"objective: mse of the output (2, 3) against {against}" in out


def test_keyword_and_positional_arguments_reach_the_model(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert probe(capsys, "--input", "umod_batches:tensor")[0] == 0
    plain = fc_var(project)
    assert probe(capsys, "--input", "umod_batches:args_kwargs")[0] == 0
    assert fc_var(project) == pytest.approx(plain)  # fc's own output, before the scale
    assert probe(capsys, "--input", "x=2x4,mask=2x3")[0] == 0  # named specs: keywords


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--input", "umod_batches:tensor", "--loss", "mse", "--target", "2:float32"],
         ["--loss mse does not fit output (2, 3)", "target (2,)", "broadcast"]),
        (["--input", "umod_batches:tensor", "--loss", "cross_entropy", "--target",
          "3:int64:3"], ["output (2, 3)", "target (3,)", "class indices need shape (2,)"]),
        (["--input", "umod_batches:stops"], ["make_batch raised SystemExit", "sys.exit(4)"]),
        (["--input", "umod_exits:anything"], ["'umod_exits' does not import", "sys.exit(3)"]),
        (["--input", "x=2x4,x=2x4"], ["'x' is given twice"]),
        (["--input", "x=2x4,2x3"], ["'2x3' is not name=SHAPE"]),
        (["--input", "umod_batches:tensor", "--loss", "model"], ["returned no loss"]),
    ],
)  # fmt: skip
def test_bad_batches_and_user_exits_are_one_line(
    project: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: list[str]
) -> None:
    code, _, err = probe(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("stability: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (project / "s.db").exists()


def test_a_detached_output_is_refused_with_the_reason(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = main(["probe", "--model", "umod_batches:detached", "--input", "2x4"])
    err = capsys.readouterr().err
    assert code == 2 and "no gradient path to the parameters" in err and "int64" in err


def test_a_factory_that_exits_or_is_interrupted(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "umod_stop.py").write_text(
        "import sys\ndef build():\n    sys.exit(3)\ndef ctrl_c():\n    raise KeyboardInterrupt\n"
    )
    capsys.readouterr()
    assert main(["probe", "--model", "umod_stop:build", "--input", "2x4"]) == 2
    assert "the factory raised SystemExit: sys.exit(3)" in capsys.readouterr().err
    assert main(["probe", "--model", "umod_stop:ctrl_c", "--input", "2x4"]) == 130
    assert probe(capsys, "--input", "umod_batches:interrupted")[0] == 130


def test_prints_while_importing_stay_off_json_stdout(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = main(["probe", "--model", "umod_noisy:build", "--input", "umod_noisy:kwargs",
                 "--db", "s.db", "--out", "p.csv", "--json"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["mode"] == "eval"
    assert "hello from the import" in captured.err
