"""An interrupted command exits 130, even after a KeyboardInterrupt that once escaped a
nested evaluation (``stability.cli.run``).

CPython keeps a process-wide flag, set when a KeyboardInterrupt leaves any ``PyRun_*``
evaluation (C code running Python, as during some imports), and ``Py_RunMain`` then ends the
process by SIGINT after finalisation, whatever ``sys.exit`` asked: CI saw ``stability doctor``
print "stability: interrupted" and die of SIGINT (-2). The child here sets that flag on
purpose, through ``ctypes``, so the case is deterministic rather than a race.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import ctypes, sys
import stability.cli as cli

def interrupted(argv=None):
    ctypes.pythonapi.PyRun_SimpleString(b"raise KeyboardInterrupt")  # sets the flag
    print("stability: interrupted", file=sys.stderr)
    return cli.EXIT_INTERRUPTED

cli.main = interrupted
{exit}
"""


def child(tmp_path: Path, exit_line: str) -> "subprocess.CompletedProcess[str]":
    """The child run as ``python -m``, as ``python -m stability`` is (``-c`` exits another
    way, which does not read the flag)."""
    (tmp_path / "interrupted_child.py").write_text(CHILD.format(exit=exit_line))
    return subprocess.run(
        [sys.executable, "-m", "interrupted_child"], cwd=tmp_path, capture_output=True,
        text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_an_interrupted_run_exits_130(tmp_path: Path) -> None:
    done = child(tmp_path, "cli.run()")
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().endswith("stability: interrupted")


def test_witness_sys_exit_alone_dies_of_sigint(tmp_path: Path) -> None:
    # What run() replaced: with the flag set, sys.exit(130) becomes death by SIGINT.
    assert child(tmp_path, "sys.exit(cli.main())").returncode == -2
