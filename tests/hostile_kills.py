"""The process rows of ``hostile_table.py``: two sweeps writing one new store at once, and a
sweep killed (SIGTERM, SIGKILL) at a seeded point, then resumed; the rows are counted after.

A (run, cell, layer) stored twice, a done cell without all its layers, a cell without rows,
or a resume that runs again what was stored is a problem of the case.
"""

import json
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from hostile_cases import Case, Reap, Spawn


# -- processes: two at once, and killed ones ------------------------------------------------
def _rows(db: Path) -> list[tuple[int, str, int]]:
    conn = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True)
    try:
        found = conn.execute("SELECT run_id, cell_key, data FROM sweep_rows").fetchall()
    finally:
        conn.close()
    return [(run, key, json.loads(data)["layer"]) for run, key, data in found]


def _done(db: Path) -> dict[int, set[str]]:
    if not db.exists():
        return {}
    try:
        conn = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=5)
        try:
            found = conn.execute("SELECT run_id, cell_key FROM cells WHERE status = 'done'")
            out: dict[int, set[str]] = {}
            for run, key in found:
                out.setdefault(run, set()).add(key)
            return out
        finally:
            conn.close()
    except sqlite3.Error:
        return {}


def count_rows(db: Path, cells: int, depth: int) -> list[str]:
    """Problems with the rows: a (run, cell, layer) twice, a done cell without all its layers,
    or fewer than ``cells`` cells with rows."""
    try:
        rows = _rows(db)
    except (sqlite3.Error, KeyError, ValueError) as exc:
        return [f"lost rows: the store's rows cannot be read ({exc})"]
    problems = [f"row lost or duplicated: {k} x{n}" for k, n in Counter(rows).items() if n > 1]
    per_cell = Counter((run, key) for run, key, _ in rows)
    for run, keys in _done(db).items():
        for key in keys:
            if per_cell[(run, key)] != depth:
                problems.append(f"lost rows: run {run} has {per_cell[(run, key)]} of {depth}")
    have = len({key for _, key, _ in rows})
    if have != cells:
        problems.append(f"lost cells: {have} of {cells} cells have rows")
    return problems


def _two_at_once(ws: Path, rng: random.Random) -> tuple[int | None, list[str]]:
    a = [
        "sweep",
        "--activation",
        "relu,tanh",
        "--init",
        "kaiming_normal",
        "--seeds",
        "0,1",
        "--depth",
        "3",
        "--width",
        "4",
        "--dtype",
        "float32",
        "--batch",
        "4",
        "--per-cell",
        "--quiet",
        "--db",
        "c.db",
    ]
    b = [*a]
    b[2] = "tanh,sigmoid"
    pids = [
        spawn_hook([*a, "--out", "a.csv"], ws, tag="run"),
        spawn_hook([*b, "--out", "b.csv"], ws, tag="b"),
    ]
    codes = [reap_hook(pid) for pid in pids]
    if None in codes:
        return None, []
    problems = count_rows(ws / "c.db", 6, 3)
    runs = _done(ws / "c.db")
    if sorted(len(keys) for keys in runs.values()) != [4, 4]:
        problems.append(f"lost cells: runs hold {[len(k) for k in runs.values()]}, expected 4, 4")
    return max(c or 0 for c in codes), problems


def _exited(pid: int) -> bool:
    """Whether child ``pid`` has ended, leaving it to be reaped."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


Process = Callable[[Path, random.Random], tuple[int | None, list[str]]]


def _kill_then_resume(sig: signal.Signals) -> Process:
    def run(ws: Path, rng: random.Random) -> tuple[int | None, list[str]]:
        argv = [
            "sweep",
            "--activation",
            "relu,tanh",
            "--init",
            "kaiming_normal,xavier_normal",
            "--seeds",
            "0,1,2,3,4,5",
            "--depth",
            "10",
            "--width",
            "16",
            "--dtype",
            "float32",
            "--batch",
            "16",
            "--per-cell",
            "--quiet",
            "--db",
            "k.db",
            "--out",
            "k.csv",
        ]
        target, extra = rng.randrange(1, 20), rng.uniform(0, 0.05)
        pid = spawn_hook(argv, ws, tag="killed")
        deadline = time.monotonic() + 60
        while sum(map(len, _done(ws / "k.db").values())) < target:
            if time.monotonic() > deadline or _exited(pid):
                break
            time.sleep(0.005)
        time.sleep(extra)
        landed = not _exited(pid)
        os.kill(pid, sig)
        killed = reap_hook(pid)
        if killed is None:
            return None, []
        code = reap_hook(spawn_hook([*argv, "--resume"], ws, tag="run"))
        # The killed run's done cells, read after the resume (a ro reader cannot roll back
        # the hot journal a SIGKILL leaves): exactly what the resume had to skip.
        before = len(_done(ws / "k.db").get(1, set()))
        problems = count_rows(ws / "k.db", 24, 10)
        if not landed or killed != 128 + sig:
            problems.append(f"kill missed: the sweep had ended (exit {killed})")
        skipped = f"{before} skipped (resume)"
        if skipped not in (ws / "run.out").read_text():
            problems.append(f"lost rows: the resume did not skip the {before} stored cells")
        return code, problems

    return run


spawn_hook: Spawn = lambda *a, **k: 0  # noqa: E731 (hostile_table sets the real ones)
reap_hook: Reap = lambda *a, **k: 0  # noqa: E731


def cases() -> list[Case]:
    out = [
        Case(
            "sweep/two at once on one new store",
            [],
            db="c.db",
            process=_two_at_once,
            outputs=["a.csv", "b.csv"],
        )
    ]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for n in range(2):
            out.append(
                Case(
                    f"sweep/{sig.name} at a seeded point #{n}, --resume",
                    [],
                    db="k.db",
                    process=_kill_then_resume(sig),
                    outputs=["k.csv"],
                )
            )
    return out
