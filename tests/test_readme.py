"""The README shows real code: its example test file is the one the suite runs."""

import re
import shlex
from pathlib import Path

import pytest

from stability.cli import build_parser
from stability.errors import StabilityError

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


COMMAND = re.compile(
    r"^(?:[A-Z_]+=\S+\s+)*(?:python3? -m stability(?:\.cli)?|stability)\s+(.+)$", re.S
)


def stability_commands(markdown: str) -> list[list[str]]:
    """Every ``stability ...`` command of the fenced shell blocks, as argv after the
    program: continuation lines joined, comments, redirections and what follows a pipe
    or ``&&`` dropped."""
    out = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", markdown, flags=re.S):
        for line in _shell_lines(re.sub(r"\\\n\s*", " ", block)):
            line = re.sub(r"\s+#[^'\"]*$", "", line.strip())
            for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line):
                match = COMMAND.match(re.sub(r"\s+\d?>\s*\S+", "", part))
                if match:
                    out.append(shlex.split(match.group(1)))
    return out


def _shell_lines(block: str) -> list[str]:
    """The block's commands: a line whose quote is still open goes on to the next, as in
    a shell (a JSON ``--model-args`` written over two lines)."""
    lines: list[str] = []
    pending = ""
    for line in block.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # an open quote
            continue
        lines.append(pending)
        pending = ""
    return lines


def test_every_documented_command_parses() -> None:
    """Each command a user copies from README.md or docs/ is accepted by the CLI's own
    parser as written: a renamed or removed flag fails here, not in a user's shell."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    commands = [c for p in docs for c in stability_commands(p.read_text(encoding="utf-8"))]
    assert len(commands) >= 10  # the pattern still finds them
    for argv in commands:
        build_parser(argv).parse_args(argv)


def test_witness_a_renamed_flag_is_caught() -> None:
    (argv,) = stability_commands("```bash\nstability sweep --depths 20  # old name\n```")
    with pytest.raises(StabilityError, match="--depths"):
        build_parser(argv).parse_args(argv)
