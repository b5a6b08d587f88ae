"""The signal tests pass whatever SIGINT disposition the suite inherits (issue 27).

Started under ``nohup``, or by a CI runner that ignores SIGINT, a process and its children
inherit SIGINT ignored: Python then never installs its ``KeyboardInterrupt`` handler, and a
``python -m stability`` child would shrug off the Ctrl-C a test sends it. The tests that send
signals set what they need themselves (the child's SIGINT reset to default, the in-process
handler installed); this runs them again in a pytest started with SIGINT ignored, so a test
that forgets fails here, not only on the machine of whoever runs the suite under nohup.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Every test that sends or catches SIGINT: the subprocess ones and the in-process ones.
SIGNAL_TESTS = [
    "tests/test_hostile_processes.py::test_sigint_during_the_imports_is_one_line",
    "tests/test_hostile_processes.py::test_sigint_during_doctor_training_writes_nothing",
    "tests/test_hostile_processes.py::test_sigint_during_gate_against_removes_its_worktrees",
    "tests/test_hostile_inputs.py::test_deferred_interrupt_finishes_the_block_then_raises",
    "tests/test_hostile_inputs.py::test_witness_without_deferral_the_block_is_cut_short",
]


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_signal_tests_pass_with_sigint_ignored(tmp_path: Path) -> None:
    """The signal tests, in a pytest that inherited SIGINT ignored, as under nohup."""
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SIGNAL_TESTS]
    argv += ["--basetemp", str(tmp_path / "inner")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        preexec_fn=ignore_sigint,
    )  # fmt: skip
    tail = (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0, tail
    assert f"{len(SIGNAL_TESTS)} passed" in done.stdout, tail


def test_witness_the_inner_suite_does_inherit_sigint_ignored() -> None:
    """Without this the test above proves nothing: a child started with ``ignore_sigint``
    does see SIGINT ignored (Python leaves an inherited SIG_IGN alone)."""
    probe = "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
        preexec_fn=ignore_sigint, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "True"
