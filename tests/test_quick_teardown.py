"""The command's quick teardown keeps every exit-time duty of the interpreter.

``stability.cli.quick_teardown`` freezes the garbage collector before CPython's exit so its
full collections over torch's and pandas' objects do not run (0.35-0.45 s of a sweep
command, issue 27). What users rely on at exit must still happen: ``atexit`` handlers and
``weakref.finalize`` callbacks (a ``TemporaryDirectory`` left open is removed by one). Each
case runs in a fresh interpreter; the witness ends the same script with ``os._exit``, the
shortcut that would skip them, and the check must see the difference.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import atexit, gc, os, sys, tempfile
from pathlib import Path
marker = Path(sys.argv[1])
kept = tempfile.TemporaryDirectory(dir=marker.parent)  # left open: its finalizer removes it
print(kept.name)
atexit.register(marker.write_text, "atexit ran")
{ending}
"""
QUICK = """
from stability.cli.process_gc import quick_teardown
quick_teardown()
assert gc.get_freeze_count() > 0, "nothing was frozen"
"""
SKIP_EVERYTHING = "os._exit(0)"  # the known-bad variant: no atexit, no finalizers


def _exit_duties(tmp_path: Path, ending: str) -> tuple[bool, bool]:
    """(the atexit handler ran, the open temporary directory was removed) after ``ending``."""
    marker = tmp_path / "marker.txt"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(ending=ending), str(marker)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    kept = Path(result.stdout.strip())
    assert kept.parent == tmp_path, result.stdout
    return marker.exists(), not kept.exists()


def test_quick_teardown_runs_atexit_handlers_and_finalizers(tmp_path: Path) -> None:
    assert _exit_duties(tmp_path, QUICK) == (True, True)


def test_witness_an_exit_that_skips_them_is_seen(tmp_path: Path) -> None:
    assert _exit_duties(tmp_path, SKIP_EVERYTHING) == (False, False)


def test_the_command_still_returns_its_exit_code(tmp_path: Path) -> None:
    """Bad input through ``python -m stability`` (``run``, then the teardown): exit 2."""
    result = subprocess.run(
        [sys.executable, "-m", "stability", "sweep", "--activation", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "nope" in result.stderr


def _fresh(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_script_collects_again_after_its_imports() -> None:
    """``own_process`` pauses collections for the imports; ``imports_done`` resumes them."""
    out = _fresh(
        "import gc\n"
        "from stability.cli.process_gc import own_process, imports_done\n"
        "own_process(); paused = not gc.isenabled()\n"
        "import json, decimal\n"
        "imports_done()\n"
        "print(paused, gc.isenabled(), gc.get_freeze_count() > 0)"
    )
    assert out == "True True True"


def test_main_in_process_leaves_the_host_collector_alone() -> None:
    """A host process (pytest, a notebook) calling ``main`` keeps its collector as it was."""
    out = _fresh(
        "import gc, contextlib, io\n"
        "from stability.cli import main\n"
        "with contextlib.redirect_stderr(io.StringIO()):\n"
        "    code = main(['sweep', '--activation', 'nope'])\n"
        "print(code, gc.isenabled(), gc.get_freeze_count())"
    )
    assert out == "2 True 0"
