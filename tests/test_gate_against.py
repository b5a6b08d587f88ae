"""``stability gate --against``: figures computed by each tree's own code, and the
shallow-clone path. Each test builds a small git repository holding a copy of the package."""

import shutil
import subprocess
from pathlib import Path

import pytest

from stability.cli import main
from stability.measure import gate

ROOT = Path(__file__).resolve().parents[1]
# Appended to the candidate's package: Kaiming's std scaled by sqrt(1/2) at import.
HALVE_KAIMING = """
import dataclasses as _dc, math as _math
from stability.core.inits import INITS as _INITS
_k = _INITS["kaiming_normal"]
def _halved(weight, gen):
    _k.apply(weight, gen)
    weight.data.mul_(_math.sqrt(0.5))
_INITS["kaiming_normal"] = _dc.replace(_k, apply=_halved)
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=repo, check=True, capture_output=True,
    )  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A one-commit repository with this package's code, as the current directory."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "stability", repo / "stability",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "one")
    monkeypatch.chdir(repo)
    return repo


def test_single_commit_skips_the_ab_check_with_one_line(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["gate", "--no-baseline", "--against", "auto"])
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and "no parent" in skipped[0]
    assert code == gate.CANNOT_JUDGE  # with nothing else to judge there is no pass


def test_against_same_code_passes_on_figures(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["gate", "--no-baseline", "--no-throughput", "--against", "HEAD"])
    out = capsys.readouterr()
    assert code == gate.PASS, out.out + out.err
    assert "72" not in out.out and "figure lists equal" in out.out


def test_against_catches_a_figure_changed_in_the_candidate(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (repo / "stability" / "__init__.py").open("a") as f:
        f.write(HALVE_KAIMING)
    code = main(["gate", "--no-baseline", "--no-throughput", "--against", "HEAD"])
    out = capsys.readouterr()
    assert code == gate.REGRESSION, out.out + out.err
    assert "against-figures" in out.out
    assert "relu/kaiming_normal/float32/d10w64/b64/s0 act_var L3" in out.out
    assert "layer 3 act_var moved -87.50%" in out.err
