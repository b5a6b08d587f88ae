"""The README's user example (examples/test_user_model.py) runs and passes as a user would run it.

The examples folder is outside pyproject's testpaths, so the main suite never collects it
directly; these tests copy the file into a fresh directory with its own pytest config, as
in a user's project, and run pytest on it in a subprocess.
"""

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "test_user_model.py"
TIMEOUT_S = 300  # torch import plus one tiny model; generous for a loaded 2-core machine
BAND = "band=(-1, 1)"


def run_example(directory: Path, source: str) -> tuple[int, str]:
    """Write ``source`` as the user's test file in ``directory``, run pytest there."""
    (directory / EXAMPLE.name).write_text(source)
    (directory / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", EXAMPLE.name, "-q", "-p", "no:cacheprovider"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def test_user_example_passes(tmp_path: Path) -> None:
    code, output = run_example(tmp_path, EXAMPLE.read_text())
    assert code == 0, output
    passed = re.search(r"(\d+) passed", output)
    assert passed is not None and int(passed.group(1)) >= 1, output


def test_user_example_reports_a_failure(tmp_path: Path) -> None:
    """The harness can fail: with an impossible band the example fails and names a layer."""
    source = EXAMPLE.read_text()
    assert BAND in source
    code, output = run_example(tmp_path, source.replace(BAND, "band=(-0.001, 0.001)"))
    assert code == 1, output
    assert re.search(r"variance not preserved at layer \d+ of 2", output), output
