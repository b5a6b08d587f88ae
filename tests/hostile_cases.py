"""The rows of ``hostile_table.py``: what each case runs, and what a clean ending is.

Every path is relative to the case's own copy of a seed workspace: ``fac.py`` (the user's
factories), ``s.db`` (a store with two sweep runs), ``mb.json`` (a model baseline) and
``bench.json`` (a pytest-benchmark file).
"""

import json
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hostile_lab import bench_doc, bench_entry

from stability.results.files import APPLICATION_ID

FACTORIES = """import sys, time, torch
from torch import nn
def good(): return nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
def exits(): sys.exit(3)
def prints(): print("hello from the factory"); return good()
def interrupts(): raise KeyboardInterrupt
def sleeps(): time.sleep(3600)
def naps(): time.sleep(0.5); return good()
def none(): return None
def notmodule(): return 42
def huge(): return torch.empty(2**40)
def huge_model(): return nn.Linear(2**20, 2**20)
def batch_exits(): sys.exit(0)
def batch_interrupts(): raise KeyboardInterrupt
def batch_sleeps(): time.sleep(3600)
def batch_none(): return None
def batch_huge(): return torch.empty(2**40, 4)
"""
GRID = [
    "--activation",
    "relu",
    "--init",
    "kaiming_normal,xavier_normal",
    "--depth",
    "2",
    "--width",
    "4",
    "--dtype",
    "float32",
    "--seeds",
    "0",
    "--batch",
    "4",
    "--quiet",
]
MODEL = ["--model", "fac:good", "--input", "4x4"]
Spawn = Callable[..., int]
Reap = Callable[..., int | None]


@dataclass
class Case:
    id: str
    argv: list[str]
    codes: tuple[int, ...] = (0,)
    stream: str = "plain"
    env: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)  # must exist after exit 0 or 1
    absent: list[str] = field(default_factory=list)  # must not exist after (no work done)
    words: list[str] = field(default_factory=list)  # stderr must hold each
    json_stdout: bool = False
    db: str = "s.db"
    keep: list[str] = field(default_factory=list)  # byte for byte unchanged
    setup: Callable[[Path], None] | None = None
    check: Callable[[Path], list[str]] | None = None
    process: Callable[[Path, random.Random], tuple[int | None, list[str]]] | None = None
    timeout: float = 60.0
    twin: str = ""  # a full stdout's code follows whether this plain case printed to stdout


def seed_workspace(seed: Path, spawn: Spawn, reap: Reap) -> Path:
    """The files every case starts from, made by the command itself."""
    seed.mkdir(parents=True)
    (seed / "fac.py").write_text(FACTORIES)
    (seed / "bench.json").write_text(json.dumps(bench_doc(bench_entry())))
    steps = [["sweep", *GRID, "--db", "s.db", "--out", "seed.csv"]] * 2
    steps.append(["baseline", *MODEL, "--reason", "seed", "--out", "mb.json"])
    for argv in steps:
        code = reap(spawn(argv, seed, tag="seed"), 120)
        if code != 0:
            raise RuntimeError(f"seed {argv} exited {code}: {(seed / 'seed.err').read_text()}")
    for name in ("seed.out", "seed.err", "seed.csv"):
        (seed / name).unlink()
    return seed


# -- every subcommand under hostile streams ---------------------------------------------------
COMMANDS: dict[str, tuple[list[str], list[str]]] = {
    "sweep": (["sweep", *GRID, "--db", "s.db", "--out", "s.csv"], ["s.csv"]),
    "sweep-json": (["sweep", *GRID, "--db", "s.db", "--out", "s.csv", "--json"], ["s.csv"]),
    "report": (
        ["report", "--no-run", "--db", "s.db", "--out", "rep/index.html"],
        ["rep/index.html"],
    ),
    "doctor": (
        [
            "doctor",
            "--steps",
            "2",
            "--depth",
            "2",
            "--width",
            "4",
            "--batch",
            "4",
            "--db",
            "s.db",
            "--out",
            "d.csv",
        ],
        ["d.csv"],
    ),
    "probe": (["probe", *MODEL, "--db", "s.db", "--out", "p.csv"], ["p.csv"]),
    "probe-json": (["probe", *MODEL, "--db", "s.db", "--out", "p.csv", "--json"], ["p.csv"]),
    "doctor-model": (
        ["doctor", *MODEL, "--steps", "2", "--db", "s.db", "--out", "dm.csv"],
        ["dm.csv"],
    ),
    "baseline": (["baseline", *MODEL, "--reason", "x", "--out", "b.json"], ["b.json"]),
    "gate": (["gate", *MODEL, "--baseline", "mb.json"], []),
    "gate-json": (["gate", *MODEL, "--baseline", "mb.json", "--json"], []),
    "experiments": (
        [
            "experiments",
            "--quick",
            "--only",
            "polynomial",
            "--seeds",
            "1",
            "--db",
            "s.db",
            "--out",
            "exp",
        ],
        ["exp/polynomial.csv"],
    ),
    "bench-ingest": (["bench-ingest", "bench.json", "--db", "s.db"], []),
    "criticality": (["criticality", "--activation", "tanh", "--depth", "10"], []),
    "diff": (["diff", "1", "2", "--db", "s.db"], []),
}
STREAMS = {"plain": (0,), "closed": (0,), "ascii": (0,), "full": ()}  # full: see twin
ASCII_ENV = {"LC_ALL": "C", "PYTHONIOENCODING": "ascii"}


def _stream_cases() -> list[Case]:
    out = []
    for name, (argv, outputs) in COMMANDS.items():
        for stream, codes in STREAMS.items():
            out.append(
                Case(
                    f"{name}/stdout-{stream}",
                    argv,
                    codes,
                    stream,
                    ASCII_ENV if stream == "ascii" else {},
                    outputs,
                    json_stdout="--json" in argv,
                    twin=f"{name}/stdout-plain" if stream == "full" else "",
                )
            )
    return out


# -- the user's code -----------------------------------------------------------------------
FENCE = {
    "exits": (2, "SystemExit"),
    "prints": (0, ""),
    "interrupts": (130, "interrupted"),
    "naps": (0, ""),
    "sleeps": (2, "UserTimeout"),
    "none": (2, "NoneType"),
    "notmodule": (2, "not a torch.nn.Module"),
    "huge": (2, "allocate"),
    "huge_model": (2, "allocate"),
}
USER_TIMEOUT = {"STABILITY_USER_TIMEOUT": "1"}


def _factory_cases() -> list[Case]:
    out = []
    runs = {
        "probe": (["probe", "--input", "4x4", "--db", "s.db", "--out", "p.csv", "--json"], "p.csv"),
        "doctor": (
            ["doctor", "--input", "4x4", "--steps", "2", "--db", "s.db", "--out", "d.csv"],
            "d.csv",
        ),
        "baseline": (["baseline", "--input", "4x4", "--reason", "x", "--out", "b.json"], "b.json"),
        "gate": (["gate", "--input", "4x4", "--baseline", "mb.json", "--json"], ""),
    }
    for command, (argv, output) in runs.items():
        names = FENCE if command == "probe" else ["exits", "prints", "interrupts", "none", "huge"]
        names = [n for n in names if (command, n) != ("gate", "prints")]  # baseline is fac:good
        for name in names:
            code, word = FENCE[name]
            files = [output] if output else []
            out.append(
                Case(
                    f"{command}/--model {name}",
                    [*argv, "--model", f"fac:{name}"],
                    (code,),
                    env=USER_TIMEOUT,
                    outputs=files if code == 0 else [],
                    absent=files if code else [],
                    words=[word] if word else [],
                    json_stdout="--json" in argv,
                )
            )
    for name, code, word in [
        ("exits", 2, "SystemExit"),
        ("interrupts", 130, "interrupted"),
        ("sleeps", 2, "UserTimeout"),
        ("none", 2, "NoneType"),
        ("huge", 2, "allocate"),
    ]:
        argv = [
            "probe",
            "--model",
            "fac:good",
            "--input",
            f"fac:batch_{name}",
            "--db",
            "s.db",
            "--out",
            "p.csv",
        ]
        out.append(
            Case(
                f"probe/--input batch_{name}",
                argv,
                (code,),
                env=USER_TIMEOUT,
                absent=["p.csv"],
                words=[word],
            )
        )
    for name, body, word in [
        ("exit_at_import", "import sys; sys.exit(3)", "SystemExit"),
        ("sleep_at_import", "import time; time.sleep(3600)", "UserTimeout"),
    ]:

        def setup(ws: Path, name: str = name, body: str = body) -> None:
            (ws / f"{name}.py").write_text(body + "\n")

        out.append(
            Case(
                f"probe/--model module {name}",
                [
                    "probe",
                    "--model",
                    f"{name}:build",
                    "--input",
                    "4x4",
                    "--db",
                    "s.db",
                    "--out",
                    "p.csv",
                ],
                (2,),
                env=USER_TIMEOUT,
                absent=["p.csv"],
                words=[word],
                setup=setup,
            )
        )
    return out


# -- stores that lie ------------------------------------------------------------------------
def _sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def _garble_pages(ws: Path) -> None:
    data = bytearray((ws / "s.db").read_bytes())
    for page in range(2, len(data) // 4096):
        data[page * 4096 : page * 4096 + 8] = b"\xff" * 8
    (ws / "s.db").write_bytes(bytes(data))


STORES: list[tuple[str, Callable[[Path], None], list[str], str]] = [
    (
        "another application_id",
        lambda ws: _sql(ws / "s.db", "PRAGMA application_id = 1234"),
        ["sweep", *GRID, "--out", "s.csv"],
        "another application",
    ),
    (
        "another application, empty",
        lambda ws: ((ws / "s.db").unlink(), _sql(ws / "s.db", "PRAGMA application_id = 1234")),
        ["sweep", *GRID, "--out", "s.csv"],
        "another application",
    ),
    (
        "0-byte file",
        lambda ws: (ws / "s.db").write_bytes(b""),
        ["sweep", *GRID, "--out", "s.csv"],
        "empty file",
    ),
    (
        "empty SQLite file",
        lambda ws: ((ws / "s.db").unlink(), _sql(ws / "s.db", "PRAGMA user_version = 1")),
        ["sweep", *GRID, "--out", "s.csv"],
        "empty",
    ),
    (
        "claims to be a store, no tables",
        lambda ws: (
            (ws / "s.db").unlink(),
            _sql(
                ws / "s.db", f"PRAGMA application_id = {APPLICATION_ID}", "PRAGMA user_version = 1"
            ),
        ),
        ["sweep", *GRID, "--out", "s.csv"],
        "no table 'runs'",
    ),
    ("corrupt pages", _garble_pages, ["sweep", *GRID, "--out", "s.csv"], "corrupt"),
    (
        "sweep_rows dropped, --resume",
        lambda ws: _sql(ws / "s.db", "DROP TABLE sweep_rows"),
        ["sweep", *GRID, "--out", "s.csv", "--resume"],
        "no table 'sweep_rows'",
    ),
    (
        "row not JSON, report",
        lambda ws: _sql(ws / "s.db", "UPDATE sweep_rows SET data = '{oops' WHERE rowid = 3"),
        ["report", "--no-run", "--out", "rep/index.html"],
        "table 'sweep_rows' row 3",
    ),
    (
        "row not JSON, diff",
        lambda ws: _sql(ws / "s.db", "UPDATE sweep_rows SET data = 'nan nan' WHERE rowid = 1"),
        ["diff", "1", "2"],
        "table 'sweep_rows' row 1",
    ),
    (
        "row a JSON list, diff",
        lambda ws: _sql(ws / "s.db", "UPDATE sweep_rows SET data = '[1, 2]' WHERE rowid = 2"),
        ["diff", "1", "2"],
        "row 2 holds a JSON list",
    ),
    (
        "bench row a JSON number, report",
        lambda ws: _sql(ws / "s.db", "INSERT INTO bench_results VALUES (1, 'x', '7')"),
        ["report", "--no-run", "--out", "rep/index.html"],
        "table 'bench_results'",
    ),
    (
        "--out is the store's journal",
        lambda ws: None,
        ["sweep", *GRID, "--out", "s.db-journal"],
        "journal",
    ),
]


def _store_cases() -> list[Case]:
    return [
        Case(
            f"store/{name}",
            [*argv, "--db", "s.db"],
            (2,),
            setup=setup,
            words=[word],
            keep=["s.db"],
            absent=["s.csv", "rep/index.html", "s.db-journal"],
        )
        for name, setup, argv, word in STORES
    ]


CASES = [*_stream_cases(), *_factory_cases(), *_store_cases()]
