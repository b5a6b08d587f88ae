"""The README shows real code: its example test file is the one the suite runs."""

import re
from pathlib import Path

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
