"""The README shows real code: its example test file is the one the suite runs."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_readme_example_is_the_shipped_example_file() -> None:
    example = (ROOT / "examples" / "test_user_model.py").read_text()
    assert example in python_blocks((ROOT / "README.md").read_text())


def test_readme_quickstart_names_the_ci_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m nox -s tests" in readme
    assert "\npython3 -m nox -s tests\n" in ci


def test_readme_hugging_face_example_gives_the_right_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's `mymodel.py` and its commands, as a user copies them: a healthy GPT-2 is
    stable, the doctor trains it with AdamW, and the gate passes against its baseline."""
    import json

    pytest.importorskip("transformers")
    from stability.cli import main

    readme = (ROOT / "README.md").read_text()
    (code,) = [b for b in python_blocks(readme) if b.startswith("# mymodel.py")]
    (tmp_path / "mymodel.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    flags = ["--model", "mymodel:build", "--input", "mymodel:batch"]
    assert main(["probe", *flags, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["verdict"] == "stable"
    doctor = ["doctor", *flags, "--optimizer", "adamw", "--lr", "1e-3", "--steps", "5"]
    assert main(doctor) == 0
    assert "stable: 5 steps" in capsys.readouterr().out
    assert main(["baseline", *flags, "--reason", "before the refactor"]) == 0
    assert main(["gate", *flags]) == 0
    assert "PASS" in capsys.readouterr().out
