"""The scripts the docs tell a user to run, run as the docs say, at small sizes.

Each is started in a fresh interpreter from the repository root with ``PYTHONPATH`` set
(as README.md and docs/ write the commands), and must exit 0 and print what it promises.
A script nobody runs rots silently: the GPU scripts, never run, had two such bugs
(``tests/test_gpu_rehearsal.py``, whose rehearsal runs every GPU script).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPTS = {
    # name: (arguments, a fragment its output must hold)
    "band_coverage": (["--widths", "32", "--seeds", "2", "--depth", "4", "--out", "{tmp}/bc"],
                      "selu"),
    "figure_spread": (["--quick", "--out", "{tmp}/spread.json"], "rtol"),
    "hf_features": (["--archs", "gpt2"], "| gpt2 | exit 0: stable |"),
    "hf_verdicts": ([], "| gpt2 | **stable** |"),
    "profile_sweep": (["6", "32", "1", "cpu"], "cumulative"),
    "prove_gate": (["--runs", "1"], "total wall time"),
    "spectrum_width": (["--seeds", "2", "--widths", "32", "--depths", "4"], "tanh"),
}  # fmt: skip
SLOW = {"prove_gate"}  # about a minute: every experiment is a fresh gate process
# Run by the GPU rehearsal (tests/test_gpu_rehearsal.py): gpu_checks and, by name, the rest.
REHEARSED = {"gpu_checks", "gpu_usermodel", "gpu_lowp", "gpu_coord", "gpu_sweep_speed"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in SCRIPTS]
)
def test_a_documented_script_runs(name: str, tmp_path: Path) -> None:
    args, promise = SCRIPTS[name]
    script = str(ROOT / "scripts" / f"{name}.py")
    done = subprocess.run(
        [sys.executable, script, *(a.format(tmp=tmp_path) for a in args)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert promise in done.stdout, done.stdout[-3000:]


def test_every_script_the_docs_name_is_run_by_a_test() -> None:
    """A script named in README.md or docs/ is run here or by the rehearsal, so a newly
    documented script needs a decision, not an oversight."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = "\n".join(p.read_text(encoding="utf-8") for p in docs)
    named = {p.stem for p in (ROOT / "scripts").glob("*.py") if f"scripts/{p.name}" in text}
    assert named - SCRIPTS.keys() - REHEARSED == set()
    rehearsal = (ROOT / "scripts" / "gpu_checks.py").read_text(encoding="utf-8")
    assert all(f'"{s}"' in rehearsal for s in REHEARSED - {"gpu_checks"})
