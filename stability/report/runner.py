"""Run what the report needs and the store lacks; reuse everything else.

- Sweeps (the default grid, plus a small bfloat16/float16 grid for the precision section)
  resume from the store: a cell already there is never recomputed.
- The property suite (``ci`` profile) and the quick benchmarks run as subprocesses and are
  reused when the *fingerprint* matches a cached run: git commit, a hash of the dirty
  state (tracked diff plus untracked files), torch/python versions and the run's options.
  The cache is ``<db folder>/report-cache/index.json`` beside the files it names.
- The doctor's default cases and lr map (``doctor_cases``, ~5 s) go to the store once per
  fingerprint; the gate's throughput check (~1 s of timing against ``baselines/``) is cached
  in the index under the fingerprint plus the baseline's bytes. The gate's stability figures
  are deterministic and cost 0.2 s: the Gate section compares them when it is drawn.

A progress display goes to stderr: a live line on a terminal, a line per step elsewhere.
"""

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from stability.measure import baseline as bl
from stability.measure import gate
from stability.report import doctor_cases
from stability.report.inputs import CACHE_DIR, PropertyRun, Step, StepStatus
from stability.results.environment import environment
from stability.results.store import Store
from stability.sweep.executors import local_executor
from stability.sweep.run import Cell, Progress, SweepGrid, default_jobs, run_sweep

# The precision section compares float16 with bfloat16 on a few telling configurations:
# the library default (stable), the notes' N(0,1) weights (overflow), Xavier with tanh and
# with sigmoid (the sigmoid gradient vanishes into subnormals), nn.Linear's own default
# (signals shrink towards flush-to-zero). float16 cells are shared with the default sweep.
PRECISION_CONFIGS: tuple[tuple[str, str], ...] = (
    ("relu", "kaiming_normal"),
    ("relu", "standard_normal"),
    ("tanh", "xavier_normal"),
    ("sigmoid", "xavier_normal"),
    ("identity", "torch_default"),
)
PRECISION_DTYPES = ("float16", "bfloat16")
LOG_TAIL_LINES = 25
LOG_EVERY_S = 30.0  # progress lines in a non-terminal log
PYTEST_COMPLETED = (0, 1, 5)  # all passed, some failed, none collected: a result to keep


@dataclass(frozen=True)
class PairGrid(SweepGrid):
    """A sweep grid restricted to chosen (activation, init) pairs: one run, few cells."""

    pairs: tuple[tuple[str, str], ...] = ()

    def cells(self) -> list[Cell]:
        wanted = set(self.pairs)
        return [c for c in super().cells() if (c.config.activation, c.config.init) in wanted]


def default_grid(quick: bool) -> SweepGrid:
    """The sweep the report draws: the CLI's default grid; ``quick`` keeps seed 0 only."""
    return SweepGrid(seeds=(0,)) if quick else SweepGrid()


def precision_grid(quick: bool) -> PairGrid:
    acts = tuple(dict.fromkeys(a for a, _ in PRECISION_CONFIGS))
    inits = tuple(dict.fromkeys(i for _, i in PRECISION_CONFIGS))
    return PairGrid(
        activations=acts,
        inits=inits,
        dtypes=PRECISION_DTYPES,
        seeds=(0,) if quick else (0, 1, 2),
        pairs=PRECISION_CONFIGS,
    )


# -- progress display --------------------------------------------------------------------------
class Display:
    """Where progress goes: a rewritten line on a terminal, plain lines in CI logs."""

    def __init__(self, stream: TextIO = sys.stderr, live: bool | None = None) -> None:
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self._last = time.monotonic()

    def say(self, text: str) -> None:
        self._clear()
        self.stream.write(f"report: {text}\n")
        self.stream.flush()

    def update(self, text: str) -> None:
        """Transient status: rewritten up to 10 times a second on a terminal; in a log, a
        line every ``LOG_EVERY_S`` seconds so a long step still shows signs of life."""
        now = time.monotonic()
        if not self.live:
            if now - self._last >= LOG_EVERY_S:
                self._last = now
                self.say(text)
            return
        if now - self._last < 0.1:
            return
        self._last = now
        self.stream.write(f"\r\x1b[2K  {text[:110]}")
        self.stream.flush()

    def _clear(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[2K")


class _SweepProgress(Progress):
    """The sweep's bar on a terminal; a line every 10 % in logs."""

    def __init__(self, total: int, display: Display, label: str) -> None:
        super().__init__(total, stream=display.stream, enabled=display.live)
        self.display = display
        self.label = label
        self._next_report = 0.1

    def advance(self, label: str = "") -> None:
        super().advance(label)
        if not self.enabled and self.total and self.count / self.total >= self._next_report:
            elapsed = time.perf_counter() - self.start
            self.display.say(f"{self.label}: {self.count}/{self.total} cells, {elapsed:.0f} s")
            while self._next_report <= self.count / self.total:
                self._next_report += 0.1


# -- fingerprint and cache -----------------------------------------------------------------------
def _git(root: Path, *args: str) -> bytes | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def _hash_file(h: "hashlib._Hash", path: Path) -> None:
    h.update(str(path).encode())
    try:
        size = path.stat().st_size
        if size > 5_000_000:  # large scratch files: size and mtime stand in for content
            h.update(f"{size}:{path.stat().st_mtime_ns}".encode())
        else:
            h.update(path.read_bytes())
    except OSError:
        h.update(b"<unreadable>")


def code_state(root: Path, exclude: Sequence[Path] = ()) -> tuple[str, str]:
    """(hash, label) of the code: commit plus the dirty state, or the sources outside git."""
    h = hashlib.sha256()
    head = _git(root, "rev-parse", "HEAD")
    if head is not None:
        commit = head.decode().strip()
        diff = _git(root, "diff", "HEAD", "--binary") or b""
        h.update(commit.encode())
        h.update(diff)
        untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z") or b""
        excluded = [e.resolve() for e in exclude]
        names = sorted(n for n in untracked.decode(errors="replace").split("\0") if n)
        dirty = bool(diff)
        for name in names:
            path = (root / name).resolve()
            if any(path == e or e in path.parents for e in excluded):
                continue
            dirty = True
            _hash_file(h, path)
        label = commit[:12] + (f"+dirty:{h.hexdigest()[:8]}" if dirty else "")
        return h.hexdigest(), label
    for folder in ("stability", "properties", "benchmarks"):
        for path in sorted((root / folder).rglob("*.py")):
            _hash_file(h, path)
    _hash_file(h, root / "pyproject.toml")
    return h.hexdigest(), f"no git; sources {h.hexdigest()[:8]}"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def fingerprint(code: str, kind: str, options: dict[str, Any]) -> str:
    """Code hash + environment + run options: equal fingerprints give equal results."""
    env = {
        "code": code,
        "kind": kind,
        **environment(("torch", "python", "machine")),
        "hypothesis": _version("hypothesis"),
        "pytest": _version("pytest"),
        "pytest-benchmark": _version("pytest-benchmark"),
        **options,
    }
    return hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()


class Cache:
    """The index of cached subprocess runs: kind -> list of entries, newest last."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.index = folder / "index.json"

    def load(self) -> dict[str, list[dict[str, Any]]]:
        try:
            data = json.loads(self.index.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def find(self, kind: str, fp: str | None = None) -> dict[str, Any] | None:
        """The newest entry of ``kind`` (with fingerprint ``fp`` if given)."""
        for entry in reversed(self.load().get(kind, [])):
            if isinstance(entry, dict) and (fp is None or entry.get("fingerprint") == fp):
                return dict(entry)
        return None

    def add(self, kind: str, entry: dict[str, Any]) -> None:
        data = self.load()
        data.setdefault(kind, []).append(entry)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.index.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.index)


# -- subprocesses --------------------------------------------------------------------------------
_PERCENT = re.compile(r"\[\s*(\d+)%\]")


def _stream(cmd: Sequence[str], cwd: Path, log: Path, display: Display, label: str) -> int:
    """Run ``cmd``, teeing its output to ``log`` and its pytest percentage to the display."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (
        log.open("w") as out,
        subprocess.Popen(
            list(cmd), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        ) as proc,
    ):
        assert proc.stdout is not None
        percent = "0"
        for line in proc.stdout:
            out.write(line)
            match = _PERCENT.search(line)
            if match:
                percent = match.group(1)
            display.update(f"{label}: {percent}% ({time.perf_counter() - start:.0f} s)")
        return proc.wait()


def _tail(log: Path, display: Display) -> None:
    with contextlib.suppress(OSError):
        for line in log.read_text().splitlines()[-LOG_TAIL_LINES:]:
            display.stream.write(f"    | {line}\n")


def _has_tests(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("test_*.py"))


# -- the runner ----------------------------------------------------------------------------------
@dataclass
class RunResult:
    steps: list[Step]
    properties: PropertyRun | None
    gate_throughput: dict[str, Any] | None = None


class Runner:
    """Fill the store (and the cache) with what the report shows, reusing what is there."""

    def __init__(
        self,
        db: Path,
        root: Path,
        quick: bool = False,
        jobs: int | None = None,
        display: Display | None = None,
        exclude: Sequence[Path] = (),
    ) -> None:
        self.db = db
        self.root = root
        self.quick = quick
        self.jobs = jobs or default_jobs()
        self.display = display or Display()
        self.cache = Cache(db.parent / CACHE_DIR)
        self._exclude = exclude
        self._code: tuple[str, str] | None = None

    @property
    def code(self) -> tuple[str, str]:
        if self._code is None:
            self._code = code_state(self.root, [self.db.parent, *self._exclude])
        return self._code

    def run(self) -> RunResult:
        steps = []
        with Store.open(self.db) as store:
            steps.append(self.sweep(store, "default sweep", default_grid(self.quick)))
            steps.append(self.sweep(store, "precision grid", precision_grid(self.quick)))
        prop_step, prop_run = self.properties()
        steps.append(prop_step)
        steps.append(self.benchmarks())
        steps.append(self.doctor())
        gate_step, gate_row = self.gate_throughput()
        steps.append(gate_step)
        return RunResult(steps, prop_run, gate_row)

    # -- sweeps ------------------------------------------------------------------------------
    def sweep(self, store: Store, name: str, grid: SweepGrid) -> Step:
        cells = grid.cells()
        done = store.done_keys()
        todo = [c for c in cells if c.key not in done]
        if not todo:
            step = Step(name, "reused", f"all {len(cells)} cells already in the store")
            self.display.say(f"{name}: {step.detail}")
            return step
        self.display.say(f"{name}: {len(todo)} of {len(cells)} cells to run, {self.jobs} jobs")
        progress = _SweepProgress(len(todo), self.display, name)
        command = ["stability", "report", f"({name})"]
        executor = local_executor(self.jobs)
        summary = run_sweep(grid, store, command, executor, resume=True, progress=progress)
        status: StepStatus = "failed" if summary.failed else "ran"
        detail = (
            f"{summary.done} cells run, {summary.skipped} reused, {summary.failed} failed "
            f"(run {summary.run_id})"
        )
        self.display.say(f"{name}: {detail} in {summary.seconds:.0f} s")
        for failure in summary.failures[:3]:
            self.display.say(f"  failed: {failure[:200]}")
        return Step(name, status, detail, summary.seconds)

    # -- property suite ----------------------------------------------------------------------
    def property_options(self) -> dict[str, Any]:
        return {"profile": "ci", "quick": self.quick}

    def properties(self) -> tuple[Step, PropertyRun | None]:
        name = "property suite"
        folder = self.root / "properties"
        if not _has_tests(folder):
            step = Step(name, "skipped", f"no test files in {folder}")
            self.display.say(f"{name}: {step.detail}")
            return step, None
        code_hash, label = self.code
        fp = fingerprint(code_hash, "properties", self.property_options())
        cached = self.cache.find("properties", fp)
        if cached is not None and Path(cached["junit"]).exists():
            run = _property_run(cached, current=True, how="reused: same code and environment")
            detail = f"reused the run of {cached['finished']} ({label})"
            self.display.say(f"{name}: {detail}")
            return Step(name, "reused", detail), run
        junit = self.cache.folder / f"properties-{fp[:16]}.xml"
        log = junit.with_suffix(".log")
        junit.unlink(missing_ok=True)
        cmd = [
            sys.executable, "-m", "pytest", "properties",
            "--hypothesis-profile=ci", "--hypothesis-show-statistics",
            f"--junitxml={junit}", "-o", "junit_family=xunit2", "-q", "-p", "no:cacheprovider",
        ]  # fmt: skip
        if self.quick:
            cmd += ["-m", "not slow"]
        self.display.say(
            f"{name}: running pytest properties (ci profile){' quick' if self.quick else ''}"
        )
        start = time.perf_counter()
        code = _stream(cmd, self.root, log, self.display, name)
        seconds = time.perf_counter() - start
        if not junit.exists():
            self.display.say(f"{name}: pytest exited {code} without a junit XML; log: {log}")
            _tail(log, self.display)
            return Step(name, "failed", f"pytest exited {code}, no junit XML", seconds), None
        if code not in PYTEST_COMPLETED:  # interrupted or broken: report it, never reuse it
            self.display.say(f"{name}: pytest exited {code}; log: {log}")
            _tail(log, self.display)
            run = _property_run(
                {"junit": str(junit), "log": str(log), "exit_code": code}, None, "incomplete run"
            )
            return Step(name, "failed", f"pytest exited {code}", seconds), run
        entry = {
            "fingerprint": fp,
            "code": label,
            "junit": str(junit),
            "log": str(log),
            "exit_code": code,
            "seconds": round(seconds, 1),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "quick": self.quick,
        }
        self.cache.add("properties", entry)
        status: StepStatus = "ran" if code == 0 else "failed"
        detail = f"pytest exit {code} in {seconds:.0f} s ({label})"
        self.display.say(f"{name}: {detail}")
        if code != 0:
            _tail(log, self.display)
        return Step(name, status, detail, seconds), _property_run(entry, True, "ran now")

    # -- benchmarks --------------------------------------------------------------------------
    def bench_command(self, out: Path) -> list[str]:
        cmd = [
            sys.executable, "-m", "pytest", "benchmarks", f"--benchmark-json={out}",
            "-q", "-p", "no:cacheprovider",
        ]  # fmt: skip
        conftest = self.root / "benchmarks" / "conftest.py"
        with contextlib.suppress(OSError):
            if "--quick" in conftest.read_text():
                cmd.append("--quick")
        return cmd

    def benchmarks(self) -> Step:
        name = "quick benchmarks"
        folder = self.root / "benchmarks"
        if not _has_tests(folder):
            step = Step(name, "skipped", f"no benchmark files in {folder}")
            self.display.say(f"{name}: {step.detail}")
            return step
        code_hash, label = self.code
        fp = fingerprint(code_hash, "bench", {"quick": True, "threads": torch.get_num_threads()})
        cached = self.cache.find("bench", fp)
        if cached is not None and _run_exists(self.db, int(cached["run_id"])):
            detail = f"reused bench run {cached['run_id']} of {cached['finished']} ({label})"
            self.display.say(f"{name}: {detail}")
            return Step(name, "reused", detail)
        out = self.cache.folder / f"bench-{fp[:16]}.json"
        log = out.with_suffix(".log")
        out.unlink(missing_ok=True)
        self.display.say(f"{name}: running pytest benchmarks")
        start = time.perf_counter()
        code = _stream(self.bench_command(out), self.root, log, self.display, name)
        seconds = time.perf_counter() - start
        if code != 0 or not out.exists():
            self.display.say(f"{name}: pytest exited {code}; log: {log}")
            _tail(log, self.display)
            if not out.exists() or code not in PYTEST_COMPLETED:
                return Step(name, "failed", f"pytest exited {code}, no usable JSON", seconds)
        try:
            from stability.measure.bench import ingest
        except ImportError:
            return Step(name, "failed", "stability.measure.bench.ingest is not available", seconds)
        with Store.open(self.db) as store:
            run_id = ingest(out, store, ["stability", "report", "(quick benchmarks)"])
        self.cache.add(
            "bench",
            {
                "fingerprint": fp,
                "code": label,
                "run_id": run_id,
                "json": str(out),
                "exit_code": code,
                "seconds": round(seconds, 1),
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
        )
        detail = f"bench run {run_id}: pytest exit {code} in {seconds:.0f} s ({label})"
        self.display.say(f"{name}: {detail}")
        return Step(name, "ran" if code == 0 else "failed", detail, seconds)

    # -- divergence doctor ---------------------------------------------------------------------
    def doctor(self) -> Step:
        """The doctor's default cases and lr map (about 5 s), once per code version."""
        name = "doctor defaults"
        code_hash, label = self.code
        fp = fingerprint(code_hash, "doctor", {"version": doctor_cases.VERSION})
        cached = self.cache.find("doctor", fp)
        if cached is not None and _run_exists(self.db, int(cached["run_id"])):
            detail = f"reused doctor run {cached['run_id']} of {cached['finished']} ({label})"
            self.display.say(f"{name}: {detail}")
            return Step(name, "reused", detail)
        self.display.say(f"{name}: diagnosing {len(doctor_cases.DEFAULT_CASES)} runs, lr map")
        start = time.perf_counter()
        tables = doctor_cases.compute()
        with Store.open(self.db) as store:
            run_id = doctor_cases.write(store, tables)
        seconds = time.perf_counter() - start
        self.cache.add(
            "doctor",
            {
                "fingerprint": fp,
                "code": label,
                "run_id": run_id,
                "seconds": round(seconds, 1),
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
        )
        detail = f"doctor run {run_id} in {seconds:.0f} s ({label})"
        self.display.say(f"{name}: {detail}")
        return Step(name, "ran", detail, seconds)

    # -- the gate's throughput check ---------------------------------------------------------
    def gate_throughput(self) -> tuple[Step, dict[str, Any] | None]:
        """The gate's train-step efficiency against the baseline (about 1 s of timing), once
        per code version and baseline; the stability figures are compared when drawing."""
        name = "gate throughput"
        path = self.root / bl.DEFAULT_PATH
        try:
            base = bl.load(path)
        except bl.CannotJudge as exc:
            self.display.say(f"{name}: skipped, {exc}")
            return Step(name, "skipped", str(exc)), None
        differences = gate.environment_differences(base["environment"], bl.fingerprint())
        if differences:
            row = gate.throughput_not_judged(base, differences)
            detail = "the baseline is from another machine: throughput not judged here"
            self.display.say(f"{name}: {detail}")
            return Step(name, "skipped", detail), {"row": dataclasses.asdict(row)}
        code_hash, label = self.code
        fp = gate_fingerprint(code_hash, path)
        cached = self.cache.find("gate-throughput", fp)
        if cached is not None:
            detail = f"reused the measurement of {cached['finished']} ({label})"
            self.display.say(f"{name}: {detail}")
            return Step(name, "reused", detail), cached
        self.display.say(f"{name}: timing the training step against the baseline")
        start = time.perf_counter()
        now = bl.efficiency_samples()
        row = gate.judge_slowdown(
            "train-step efficiency",
            base["throughput"]["efficiency"],
            now["efficiency"],
            gate.EFFICIENCY_TOLERANCE,
            higher_is_slower=False,
        )
        seconds = time.perf_counter() - start
        entry = {
            "fingerprint": fp,
            "code": label,
            "row": dataclasses.asdict(row),
            "rounds": len(now["efficiency"]),
            "nonfinite_losses": now["nonfinite_losses"],
            "seconds": round(seconds, 1),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        self.cache.add("gate-throughput", entry)
        detail = f"{row.verdict}: efficiency {row.change} in {seconds:.0f} s ({label})"
        self.display.say(f"{name}: {detail}")
        return Step(name, "ran", detail, seconds), entry


def gate_fingerprint(code: str, baseline: Path) -> str:
    """Code + environment + the baseline's bytes: a rebaseline invalidates the measurement."""
    try:
        digest = hashlib.sha256(baseline.read_bytes()).hexdigest()
    except OSError:
        digest = "absent"
    return fingerprint(code, "gate-throughput", {"baseline": digest})


def cached_gate_throughput(db: Path, root: Path, code: str) -> dict[str, Any] | None:
    """For ``--no-run``: the throughput measurement made for this code and baseline, if any."""
    fp = gate_fingerprint(code, root / bl.DEFAULT_PATH)
    return Cache(db.parent / CACHE_DIR).find("gate-throughput", fp)


def _run_exists(db: Path, run_id: int) -> bool:
    with Store.open(db) as store:
        row = store.conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone()
    return row is not None


def _property_run(entry: dict[str, Any], current: bool | None, how: str) -> PropertyRun:
    log = entry.get("log")
    return PropertyRun(
        junit=Path(entry["junit"]),
        log=Path(log) if log else None,
        source=f"{how}; pytest properties --hypothesis-profile=ci at {entry.get('finished')} "
        f"on code {entry.get('code')}",
        current=current,
        exit_code=entry.get("exit_code"),
        finished=entry.get("finished"),
    )


def latest_properties(db: Path, root: Path, code: str | None) -> PropertyRun | None:
    """For ``--no-run``: the newest cached property run, or a junit XML the nox sessions wrote."""
    cache = Cache(db.parent / CACHE_DIR)
    entry = cache.find("properties")
    if entry is not None and Path(entry["junit"]).exists():
        current = None
        if code is not None:
            fp = fingerprint(
                code, "properties", {"profile": "ci", "quick": bool(entry.get("quick"))}
            )
            current = fp == entry.get("fingerprint")
        how = "from the cache (same code)" if current else "from the cache, older code"
        return _property_run(entry, current, how)
    for candidate in (root / "results" / "properties-junit.xml", root / "results" / "junit.xml"):
        if candidate.exists():
            return PropertyRun(
                junit=candidate,
                log=None,
                source=f"{candidate} (written by a nox session; its code version is unknown)",
                current=None,
            )
    return None


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    box = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start
