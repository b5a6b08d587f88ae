"""``stability baseline --model`` and ``stability gate --model`` on the examples, from the CLI.

Each example records a baseline and passes the gate against it (same flags, same code: the
figures are bit-identical on one machine). A regression is planted in the baseline, the
way a change to the model's code would show: one figure moved by 2.5e-4, just over the
figure rtol of 1e-4 (docs/figure-tolerances.md: 1.5e-6 cross-machine spread x 100; 2.44e-4
is the Bessel slip the note wants caught), fails with exit 1 naming the module; moved by
1e-5 it passes. Bad input fails closed: exit 2, one line.
"""

import json
from pathlib import Path

import pytest

from stability.cli import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = {
    "transformer": ["--model", "examples.transformer:build", "--model-args",
                    '{"depth": 1, "width": 16, "heads": 2}', "--input",
                    "examples.transformer:make_batch", "--loss", "cross_entropy"],
    "resmlp": ["--model", "examples.resmlp:build", "--model-args", '{"depth": 2, "width": 16}',
               "--input", "16x16:float32", "--loss", "mse"],
    "cnn": ["--model", "examples.cnn:build", "--model-args", '{"channels": 4}',
            "--input", "examples.cnn:make_batch", "--loss", "cross_entropy"],
}  # fmt: skip
CAUGHT = 2.5e-4  # just over rtol 1e-4: a Bessel-sized slip
NOISE = 1e-5  # ten times under rtol: must pass


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def plant(path: Path, factor: float) -> str:
    """Scale one figure of the baseline (the last module's backward variance); its name."""
    doc = json.loads(path.read_text())
    module = list(doc["modules"])[-1]
    doc["modules"][module]["bwd_var"] *= factor
    path.write_text(json.dumps(doc))
    return str(module)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_gate_passes_then_catches_a_planted_change(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "model-baseline.json"
    flags = EXAMPLES[name]
    assert main(["baseline", "--reason", "test", *flags, "--out", str(base)]) == 0
    doc = json.loads(base.read_text())
    assert doc["schema"] == "stability-model-baseline/1" and doc["rtol"] == 1e-4
    assert main(["gate", *flags, "--baseline", str(base)]) == 0
    capsys.readouterr()
    module = plant(base, 1 + CAUGHT)
    assert main(["gate", *flags, "--baseline", str(base)]) == 1
    captured = capsys.readouterr()
    assert f"REGRESSION {module} bwd_var" in captured.err and "REGRESSION" in captured.out
    plant(base, (1 + NOISE) / (1 + CAUGHT))  # back to within 1e-5 of the truth
    assert main(["gate", *flags, "--baseline", str(base)]) == 0


def test_bad_baselines_and_flags_cannot_be_judged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = EXAMPLES["resmlp"]
    base = tmp_path / "b.json"
    assert main(["baseline", "--reason", "t", *flags, "--out", str(base)]) == 0
    good = base.read_text()
    cases = {
        "missing": (["--baseline", str(tmp_path / "none.json")], "not found"),
        "other seed": (["--baseline", str(base), "--seed", "1"], "recorded for"),
        "against": (["--baseline", str(base), "--against", "HEAD"], "--against judges"),
        "rtol": (["--baseline", str(base), "--rtol", "2"], "--rtol must be in (0, 1)"),
    }
    for extra, message in cases.values():
        capsys.readouterr()
        code = main(["gate", *flags, *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err, (extra, err)
    for text, message in [("{", "not readable JSON"),
                          ('{"schema": "stability-baseline/3"}', "has schema"),
                          (good.replace('"fwd_var"', '"fwd_varx"'), "must hold")]:  # fmt: skip
        base.write_text(text)
        capsys.readouterr()
        assert main(["gate", *flags, "--baseline", str(base)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


def test_a_changed_model_cannot_be_judged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = EXAMPLES["resmlp"]
    base = tmp_path / "b.json"
    assert main(["baseline", "--reason", "t", *flags, "--out", str(base)]) == 0
    doc = json.loads(base.read_text())
    doc["modules"]["blocks.9.fc1"] = doc["modules"]["head"]  # a module the model lacks
    base.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["gate", *flags, "--baseline", str(base)]) == 2
    assert "modules differ from the baseline's" in capsys.readouterr().err


def test_rtol_is_the_documented_figure_rtol() -> None:
    from stability.integrations.model_gate import DEFAULT_RTOL

    note = (REPO / "docs" / "figure-tolerances.md").read_text()
    assert DEFAULT_RTOL == 1e-4 and "| float32 | 1.47e-6 | **1e-4** |" in note
