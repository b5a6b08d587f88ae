"""Issue 28's hostile table: every subcommand under a closed, a full and an ASCII-only stdout,
the user's factories (``--model``, ``--input``) that exit, print, raise KeyboardInterrupt,
sleep, return None or no Module, or allocate terabytes; stores that lie; two sweeps on one
store at once; SIGTERM and SIGKILL at seeded points of a sweep, then ``--resume``.

    PYTHONPATH=$PWD python tests/hostile_table.py            # the table, then the totals
    PYTHONPATH=$PWD python tests/hostile_table.py --json     # the totals as one JSON line

This process imports torch once and forks one child per command (a fresh interpreter per case
would cost ~5 s of imports on 2 cores). The child sets up its streams as an interpreter
started that way would: descriptor 1 closed and ``sys.stdout`` None (``>&-``), /dev/full on
it, or an ``ascii`` stdout (``PYTHONIOENCODING=ascii``); it runs ``stability.cli.main`` and
flushes like the interpreter at exit. ``test_hostile_table.py`` also runs the stream cases
in real interpreters. A case is clean when its exit code is the documented one, stderr has
no traceback and at most one ``stability:`` line, its results were written, its store is
whole (``quick_check``, every table, a hostile store byte for byte unchanged) and it ended in
time.
"""

import dataclasses
import hashlib
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import hostile_cases
import hostile_kills
from hostile_cases import Case, seed_workspace

from stability.cli import build_parser
from stability.cli import main as stability_main


def preload() -> None:
    """What every command imports (torch, pandas, matplotlib, each subcommand), once here:
    each forked child starts with them loaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot
    import torch  # noqa: F401

    import stability.report.build
    import stability.usermodel.probe  # noqa: F401

    build_parser()


TIMEOUT_S = 60.0
PARALLEL = 2
KILL_SEED = 28


@dataclass
class Outcome:
    case: Case
    code: int | None  # None: killed after TIMEOUT_S (a hang)
    seconds: float = 0.0
    out: str = ""
    err: str = ""
    ws: Path = Path()
    before: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


# -- the child: one command with hostile streams ---------------------------------------------
def _child(argv: list[str], ws: Path, stream: str, env: dict[str, str], tag: str) -> None:
    """In the forked child: set up streams as ``stream`` says, run ``main``, never return."""
    code = 1
    try:
        os.chdir(ws)
        os.environ.update(env)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        out = os.open(ws / f"{tag}.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err = os.open(ws / f"{tag}.err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(err, 2)
        os.close(err)
        if stream == "closed":
            os.close(1)
        elif stream == "full":
            os.dup2(os.open("/dev/full", os.O_WRONLY), 1)
        else:
            os.dup2(out, 1)
        os.close(out)
        encoding = "ascii" if stream == "ascii" else "utf-8"
        sys.stdout = (
            None  # type: ignore[assignment]
            if stream == "closed"
            else io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding=encoding)
        )
        sys.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False),
            encoding=encoding,
            errors="backslashreplace",
            line_buffering=True,
        )
        try:
            code = stability_main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        try:  # the interpreter's flush at exit
            if sys.stdout is not None:
                sys.stdout.flush()
        except Exception as exc:
            print(f"Exception ignored on flushing sys.stdout: {exc!r}", file=sys.stderr)
            code = 120
        sys.stderr.flush()
    finally:
        os._exit(code)


def spawn(
    argv: list[str],
    ws: Path,
    stream: str = "plain",
    env: dict[str, str] | None = None,
    tag: str = "run",
) -> int:
    """Fork a child running ``stability argv`` in ``ws``; its pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(argv, ws, stream, env or {}, tag)
    return pid


def exit_code(status: int) -> int:
    """A wait status as a shell reports it: the code, or 128 + N for signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def reap(pid: int, timeout: float = TIMEOUT_S) -> int | None:
    """The child's exit code (128 + N for signal N); None after killing it at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return exit_code(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.02)


# -- what a case left behind ------------------------------------------------------------------
def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"


def store_problem(db: Path) -> str:
    """Why the store at ``db`` is damaged, or ""."""
    if not db.exists():
        return ""
    try:
        conn = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True)
        try:
            check = conn.execute("PRAGMA quick_check").fetchall()
            names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"store unreadable ({exc})"
    if check != [("ok",)]:
        return f"store corrupt ({check[0][0]})"
    missing = {"runs", "cells", "sweep_rows"} - names
    return f"store lacks {sorted(missing)}" if missing else ""


def judge(outcome: Outcome, ws: Path, before: dict[str, str]) -> None:
    """Fill ``outcome.problems``: the columns of the table it falls in."""
    case, err = outcome.case, outcome.err
    if outcome.code is None:
        outcome.problems.append("hang")
        return
    if "Traceback (most recent call last)" in err or "Exception ignored" in err:
        outcome.problems.append("traceback")
    if outcome.code not in case.codes:
        outcome.problems.append(f"wrong code ({outcome.code}, expected {case.codes})")
    lines = [line for line in err.splitlines() if line.startswith("stability:")]
    if len(lines) > 1 or (outcome.code in (2, 130) and len(lines) != 1):
        outcome.problems.append(f"noise ({len(lines)} stability: lines on stderr)")
    for name in case.words:
        if name not in err:
            outcome.problems.append(f"stderr lacks {name!r}")
    for name in case.outputs if outcome.code in (0, 1) else ():
        path = ws / name
        if not path.exists() or (path.is_file() and path.stat().st_size == 0):
            outcome.problems.append(f"lost result {name}")
    if case.json_stdout and case.stream == "plain" and outcome.code in (0, 1):
        try:
            json.loads(outcome.out)
        except ValueError:
            outcome.problems.append("stdout is not one JSON document")
    for name, old in before.items():  # hostile stores: byte for byte as they were
        if digest(ws / name) != old:
            outcome.problems.append(f"store damaged ({name} changed)")
    db = ws / case.db
    if case.db not in before and (problem := store_problem(db)):
        outcome.problems.append(f"store damaged ({problem})")
    if case.check is not None:
        outcome.problems.extend(case.check(ws))


# -- the runs ---------------------------------------------------------------------------------
def prepare(case: Case, root: Path, seed: Path) -> tuple[Path, dict[str, str]]:
    ws = root / f"case{CASES.index(case):03d}"  # not the id: '#', ',' or ' ' break SQLite URIs
    shutil.copytree(seed, ws)
    if case.setup is not None:
        case.setup(ws)
    return ws, {name: digest(ws / name) for name in case.keep}


def finish(outcome: Outcome, ws: Path, before: dict[str, str]) -> Outcome:
    """What the case's last command printed, read before its folder goes; judged later."""
    for suffix in ("out", "err"):
        path = ws / f"run.{suffix}"
        text = path.read_text(errors="replace") if path.exists() else ""
        setattr(outcome, suffix, text)
    outcome.ws, outcome.before = ws, before
    return outcome


def run_commands(cases: list[Case], root: Path, seed: Path) -> list[Outcome]:
    """The command cases, ``PARALLEL`` children at a time, polled from this one thread (no
    thread may hold a lock while this process forks)."""
    pending, running, done = list(cases), [], []
    while pending or running:
        while pending and len(running) < PARALLEL:
            case = pending.pop(0)
            ws, before = prepare(case, root, seed)
            pid = spawn(case.argv, ws, case.stream, case.env)
            running.append((case, ws, before, pid, time.monotonic()))
        for item in list(running):
            case, ws, before, pid, started = item
            finished, status = os.waitpid(pid, os.WNOHANG)
            code: int | None
            if finished:
                code = exit_code(status)
            elif time.monotonic() - started > case.timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                code = None
            else:
                continue
            running.remove(item)
            done.append(finish(Outcome(case, code, time.monotonic() - started), ws, before))
        time.sleep(0.02)
    return done


def run_process(case: Case, root: Path, seed: Path) -> Outcome:
    """A case with its own choreography of children (``case.process``)."""
    assert case.process is not None
    ws, before = prepare(case, root, seed)
    started = time.monotonic()
    try:
        code, problems = case.process(ws, random.Random(f"{KILL_SEED}-{case.id}"))
    except TimeoutError:
        code, problems = None, []
    outcome = finish(Outcome(case, code, time.monotonic() - started), ws, before)
    outcome.problems.extend(problems)
    return outcome


def judge_all(outcomes: list[Outcome]) -> None:
    """Judge every case; a full stdout's code is 1 where its plain twin printed to stdout
    (the output was lost), else 0 (nothing was lost)."""
    printed = {o.case.id: bool(o.out.strip()) for o in outcomes}
    for o in outcomes:
        if o.case.twin:
            o.case = dataclasses.replace(o.case, codes=(1,) if printed.get(o.case.twin) else (0,))
        judge(o, o.ws, o.before)


hostile_kills.spawn_hook, hostile_kills.reap_hook = spawn, reap
CASES = [*hostile_cases.CASES, *hostile_kills.cases()]

COLUMNS = ("wrong code", "traceback", "hang", "store damaged", "noise", "lost result", "other")


def column(problem: str) -> str:
    for name in COLUMNS[:-1]:
        if problem.startswith(name):
            return name
    return "other"


def totals(outcomes: list[Outcome]) -> dict[str, int]:
    counts = {"cases": len(outcomes), "clean": sum(not o.problems for o in outcomes)}
    for name in COLUMNS:
        counts[name] = sum(any(column(p) == name for p in o.problems) for o in outcomes)
    return counts


def run_all(select: Callable[[Case], bool] = lambda c: True) -> list[Outcome]:
    preload()
    with tempfile.TemporaryDirectory(prefix="hostile-table-") as tmp:
        root = Path(tmp)
        seed = seed_workspace(root / "_seed", spawn, reap)
        cases = [c for c in CASES if select(c)]
        outcomes = run_commands([c for c in cases if c.process is None], root, seed)
        outcomes += [run_process(c, root, seed) for c in cases if c.process is not None]
        judge_all(outcomes)
    return outcomes


def main() -> int:
    started = time.monotonic()
    outcomes = run_all()
    counts = totals(outcomes)
    if "--json" not in sys.argv:
        for o in outcomes:
            state = "clean" if not o.problems else "; ".join(o.problems)
            print(f"{o.case.id:<44} exit {o.code!s:>4} {o.seconds:5.1f} s  {state}")
        print()
    counts["seconds"] = round(time.monotonic() - started)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
