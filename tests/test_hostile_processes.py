"""Hostile things done to a running ``python -m stability``: Ctrl-C (SIGINT) during its
imports, during training and during ``gate --against``; ``kill -9`` of a sweep with workers;
a reader that closes stdout. Each waits on an observable state (torch mapped, a file, a git
worktree, a child process), never on a sleep that could race.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile import ROOT, counts, doctor, sweep

from stability.cli.limits import MAX_STEPS

needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def wait_for(check: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def stability(
    args: list[str], cwd: Path, pythonpath: Path = ROOT, **kw: Any
) -> "subprocess.Popen[str]":
    """``python -m stability ARGS`` running ``pythonpath``'s package; stdout and stderr piped
    unless ``kw`` says otherwise."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    # The child's SIGINT at its default, whatever this process inherited (nohup and some CI
    # runners ignore it, and an ignored SIGINT is inherited: Ctrl-C would then do nothing).
    kw = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "preexec_fn": default_sigint, **kw}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stability", *args], cwd=cwd, env=env, text=True, **kw
    )
    STARTED.append(proc)
    return proc


STARTED: list["subprocess.Popen[str]"] = []


@pytest.fixture(autouse=True)
def reap() -> Iterator[None]:
    """Kill and reap whatever a test started and left running (a failed wait, a timeout):
    a live Popen collected later warns (ResourceWarning, an error here) in some other test."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if int(ppid) == pid and state != "Z":
                found.append(int(entry.name))
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def maps_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def finish(proc: "subprocess.Popen[str]") -> tuple[int, str]:
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@needs_proc
def test_sigint_during_the_imports_is_one_line(tmp_path: Path) -> None:
    """Ctrl-C while torch is still loading (seconds, on a busy machine): 130 and one line."""
    proc = stability([*doctor(), "--db", str(tmp_path / "s.db"), "--out", "d.csv"], tmp_path)
    wait_for(lambda: maps_torch(proc.pid) or proc.poll() is not None, "torch to load")
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc)
    assert (code, err) == (130, "stability: interrupted\n")


@needs_proc
def test_sigint_during_doctor_training_writes_nothing(tmp_path: Path) -> None:
    db, out = tmp_path / "s.db", tmp_path / "d.csv"
    # MAX_STEPS steps take minutes even at width 4: the interrupt lands mid-training.
    proc = stability([*doctor(steps=str(MAX_STEPS)), "--db", str(db), "--out", str(out)], tmp_path)
    wait_for(db.exists, "the doctor to open its store (its last step before training)")
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc)
    assert (code, err) == (130, "stability: interrupted\n")
    assert list(tmp_path.glob("*.csv")) == []
    assert counts(db)["runs"] == 0 and counts(db)["doctor_rows"] == 0


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


def _worktrees(repo: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in _git(repo, "worktree", "list", "--porcelain")
            .splitlines() if line.startswith("worktree ")]  # fmt: skip


def test_sigint_during_gate_against_removes_its_worktrees(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "stability", repo / "stability",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    before = _worktrees(repo)
    proc = stability(["gate", "--no-baseline", "--no-throughput", "--against", "HEAD"], repo,
                     pythonpath=repo)  # fmt: skip
    # The interrupt lands while git is still checking the worktree out, or just after.
    extra = wait_for(lambda: [w for w in _worktrees(repo) if w not in before], "a gate worktree")
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc)
    assert (code, err) == (130, "stability: interrupted\n")
    assert _worktrees(repo) == before
    assert not any(Path(w).exists() for w in extra)


@needs_proc
def test_kill_9_of_a_sweep_leaves_no_orphaned_workers(tmp_path: Path) -> None:
    # Minutes of cells, so the parent dies mid-sweep, not while its pool is shutting down.
    argv = sweep(seeds=",".join(map(str, range(400))), depth="200", width="64", jobs="2")
    # No pipes: an orphan holding one would block this test instead of failing it.
    proc = stability([*argv, "--db", str(tmp_path / "s.db"), "--out", "o.csv"], tmp_path,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    pool: list[int] = []
    try:

        def workers() -> list[int]:  # forked pool workers share the parent's command line
            mine = cmdline(proc.pid)  # read late: right after Popen it may not be exec'd yet
            return [c for c in children(proc.pid) if mine and cmdline(c) == mine]

        def started() -> list[int]:
            assert proc.poll() is None, "the sweep ended before its workers were seen"
            found = workers()
            return found if len(found) >= 2 else []

        pool = wait_for(started, "two pool workers")
        proc.kill()
        proc.wait()
        wait_for(lambda: not any(alive(w) for w in pool), "the workers to die", timeout=10)
    finally:
        proc.kill()
        proc.wait()
        for pid in filter(alive, pool):  # a failed run must not leave its orphans behind
            os.kill(pid, signal.SIGKILL)


@needs_proc
def test_broken_pipe_mid_output_is_quiet_and_loses_nothing(tmp_path: Path) -> None:
    """``stability doctor | head -0``: the reader leaves before the first byte; the
    diverged run's per-layer table (over 8 KiB) then breaks the pipe mid-output."""
    db, out = tmp_path / "s.db", tmp_path / "d.csv"
    read, write = os.pipe()
    argv = doctor(depth="150", width="2", lr="1e30")
    proc = stability([*argv, "--db", str(db), "--out", str(out)], tmp_path, stdout=write)
    os.close(write)
    os.close(read)
    code, err = finish(proc)
    assert code in (0, 141) and err == ""
    assert out.exists() and counts(db)["runs"] == 1
