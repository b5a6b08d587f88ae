"""Run what the report needs and the store lacks; reuse everything else.

- Sweeps (``plan``: the default grid, plus a small bfloat16/float16 grid for the precision
  section) resume from the store: a cell already there is never recomputed.
- The property suite (``ci`` profile) and the quick benchmarks run as subprocesses and are
  reused when the fingerprint (``cache``) matches a cached run. The property suite runs
  beside the in-process steps (``background``); the benchmarks after everything, alone.
- The doctor's default cases and lr map (``doctor_cases``, ~5 s) go to the store once per
  fingerprint.
- The notes' experiments (``experiments_run``: ``stability experiments --quick``, about a
  minute) go to the store once per fingerprint.
- The gate (``gate_run``): the stability figures judged against ``baselines/`` and the
  throughput timed there, each cached under the fingerprint plus the baseline's bytes.

Progress goes to a ``progress.Display``: a live line on a terminal, a line per step elsewhere.
"""

import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stability.errors import StabilityError
from stability.report import doctor_cases, plan, spectrum_cases
from stability.report.background import Pending
from stability.report.cache import Cache, code_state, fingerprint
from stability.report.experiments_run import experiments_step
from stability.report.gate_run import figures_step, gate_result, throughput_step
from stability.report.inputs import GateResult, PropertyRun, Step, StepStatus
from stability.report.progress import Display, SweepProgress, stream, tail
from stability.report.properties_run import PYTEST_COMPLETED, start_properties
from stability.report.stored_step import stored_step
from stability.results.store import Store
from stability.sweep.run import SweepGrid, default_jobs, run_sweep
from stability.sweep.stacks import default_budget
from stability.sweep.vectorised import VectorisedExecutor

# ``--quick`` benchmarks: the throughput curve's train and forward steps at two batches, five
# rounds (``benchmarks/conftest.py --smoke``); the rest of the suite runs in full mode only.
SMOKE_SELECTION = "test_train_step or test_forward"
# Seconds (full, --quick) when nothing is cached: a first guess, replaced by the previous
# run's own seconds from the cache where there is one; sweeps: per cell per job. Measured on
# a quiet 2-core Intel Xeon in a fresh clone (README main job, 2026-12-08): properties 79 s,
# benchmarks 82 s, doctor + spectrum + experiments + gate 26 s (--quick: 54, 7 and 22 s),
# then about 1.5x for a busier machine. The guesses of 600 and 480 s came from a time when
# the suite took that long: the first line promised 18 minutes for a 3.5-minute run.
EXPECTED_S = {"properties": (120.0, 90.0), "bench": (125.0, 20.0), "other": (40.0, 35.0)}
SWEEP_CELL_S = 0.4


def _has_tests(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("test_*.py"))


def _run_exists(db: Path, run_id: int) -> bool:
    with Store.open(db) as store:
        return store.has_run(run_id)


@dataclass
class RunResult:
    """What the runner did, and the results the report takes from it beside the store."""

    steps: list[Step]
    properties: PropertyRun | None
    gate: GateResult | None = None


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
        while_waiting: Callable[[list[Step]], None] | None = None,
    ) -> None:
        """``while_waiting``: work for the idle stretch while the property suite still runs
        (the report draws its figures into their cache), given the steps so far."""
        self.db = db
        self.root = root
        self.quick = quick
        self.jobs = jobs or default_jobs()
        self.display = display or Display()
        self.cache = Cache.beside(db)
        self._exclude = exclude
        self.while_waiting = while_waiting
        self._code: tuple[str, str] | None = None

    @property
    def code(self) -> tuple[str, str]:
        if self._code is None:
            self._code = code_state(self.root, [self.db.parent, *self._exclude])
        return self._code

    def run(self) -> RunResult:
        """Every step, each one's time said as it finishes. The property suite (a subprocess)
        starts first and runs beside the sweeps, doctor, spectrum and experiments
        (``background``); the benchmarks and the gate's timing run after it, alone."""
        self.display.say(self.opening_line())
        start = last = time.perf_counter()
        steps: list[Step] = []

        def done(*finished: Step) -> None:  # each step's time as it finishes
            nonlocal last
            now = time.perf_counter()
            names = " + ".join(f"{s.name} ({s.status})" for s in finished)
            self.display.say(f"{names}: {now - last:.0f} s, {now - start:.0f} s so far")
            steps.extend(finished)
            last = now

        props = self.start_properties()
        try:
            with Store.open(self.db) as store, contextlib.ExitStack() as pools:
                kept: dict[str, VectorisedExecutor] = {}  # one pool per device for every sweep
                for name, grid in plan.sweeps(self.quick):
                    if grid.device not in kept:
                        executor = VectorisedExecutor(
                            self.jobs, default_budget(grid.device), keep_workers=True
                        )
                        kept[grid.device] = pools.enter_context(executor)
                    done(self.sweep(store, name, grid, kept[grid.device]))
            done(self.doctor())
            done(self.spectrum())
            with Store.open(self.db) as store:
                done(experiments_step(store, self.cache, self.code, self.display))
            if self.while_waiting is not None and props.busy():
                self.display.say("drawing the figures while the property suite finishes")
                self.while_waiting(list(steps))
            prop_step, prop_run = props.result()
        except BaseException:
            props.abort()
            raise
        done(prop_step)
        done(self.benchmarks())
        gate_steps, verdict = self.gate()
        done(*gate_steps)
        return RunResult(steps, prop_run, verdict)

    def opening_line(self) -> str:
        """What the run says first: its expected time, and ``--quick`` where it is quick."""
        return f"{'--quick: ' if self.quick else ''}{self.expected()}"

    def expected(self) -> str:
        """The expected time, said up front: sweep cells still to run, and the property
        suite and benchmarks at their last run's seconds (a fixed guess before any run)."""
        mode = 1 if self.quick else 0
        with Store.open(self.db) as store:
            done = store.done_keys()
            cells = [c for _, grid in plan.sweeps(self.quick) for c in grid.cells()]
        todo = sum(1 for c in cells if c.key not in done)
        parts = {"sweeps": todo * SWEEP_CELL_S / self.jobs}
        for kind in ("properties", "bench"):
            last = self.cache.find(kind)
            same_mode = last is not None and bool(last.get("quick", False)) == self.quick
            guess = float(last["seconds"]) if last and same_mode else EXPECTED_S[kind][mode]
            parts[kind] = guess
        parts["doctor, spectrum, experiments, gate"] = EXPECTED_S["other"][mode]
        # the property suite runs beside the sweeps and the other in-process steps
        beside = parts["sweeps"] + parts["doctor, spectrum, experiments, gate"]
        total = max(parts["properties"], beside) + parts["bench"]
        detail = ", ".join(f"{k} {v:.0f} s" for k, v in parts.items())
        return (
            f"expected at most about {total / 60:.1f} min if nothing is cached ({detail}; "
            "the properties beside the sweeps and the rest)"
        )

    # -- the gate ----------------------------------------------------------------------------
    def gate(self) -> tuple[list[Step], GateResult | None]:
        """The gate against ``baselines/``: figures judged, throughput timed, each cached."""
        figures_done, figures = figures_step(self.root, self.cache, self.code, self.display)
        timed, throughput = throughput_step(self.root, self.cache, self.code, self.display)
        return [figures_done, timed], gate_result(figures, throughput)

    # -- sweeps ------------------------------------------------------------------------------
    def sweep(
        self, store: Store, name: str, grid: SweepGrid, executor: VectorisedExecutor | None = None
    ) -> Step:
        """One sweep into the store, its stored cells reused; on ``executor`` (a kept pool
        the report's sweeps share) or a pool of its own."""
        cells = grid.cells()
        done = store.done_keys()
        todo = [c for c in cells if c.key not in done]
        if not todo:
            step = Step(name, "reused", f"all {len(cells)} cells already in the store")
            self.display.say(f"{name}: {step.detail}")
            return step
        self.display.say(f"{name}: {len(todo)} of {len(cells)} cells to run, {self.jobs} jobs")
        progress = SweepProgress(len(todo), self.display, name)
        command = ["stability", "report", f"({name})"]
        executor = executor or VectorisedExecutor(self.jobs, default_budget(grid.device))
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
    def start_properties(self) -> Pending[tuple[Step, PropertyRun | None]]:
        """The property suite: reused, or started now to run beside the next steps."""
        return start_properties(self.root, self.cache, self.code, self.quick, self.display)

    def properties(self) -> tuple[Step, PropertyRun | None]:
        """The property suite, reused or run now, waited for."""
        return self.start_properties().result()

    # -- benchmarks --------------------------------------------------------------------------
    def bench_command(self, out: Path) -> list[str]:
        cmd = [
            sys.executable, "-m", "pytest", "benchmarks", f"--benchmark-json={out}",
            "-q", "-p", "no:cacheprovider",
        ]  # fmt: skip
        conftest = self.root / "benchmarks" / "conftest.py"
        with contextlib.suppress(OSError):
            text = conftest.read_text()
            if "--quick" in text:
                cmd.append("--quick")
            if self.quick and "--smoke" in text:
                cmd += ["--smoke", "-k", SMOKE_SELECTION]
        return cmd

    def benchmarks(self) -> Step:
        name = "quick benchmarks"
        folder = self.root / "benchmarks"
        if not _has_tests(folder):
            step = Step(name, "skipped", f"no benchmark files in {folder}")
            self.display.say(f"{name}: {step.detail}")
            return step
        code_hash, label = self.code
        options: dict[str, Any] = {"quick": True, "threads": torch.get_num_threads()}
        full = fingerprint(code_hash, "bench", options)  # the README's job: every benchmark
        fp = fingerprint(code_hash, "bench", {**options, "smoke": True}) if self.quick else full
        cached = self.cache.find("bench", full) or self.cache.find("bench", fp)
        if cached is not None and _run_exists(self.db, int(cached["run_id"])):
            detail = f"reused bench run {cached['run_id']} of {cached['finished']} ({label})"
            self.display.say(f"{name}: {detail}")
            return Step(name, "reused", detail)
        out = self.cache.folder / f"bench-{fp[:16]}.json"
        log = out.with_suffix(".log")
        out.unlink(missing_ok=True)
        self.display.say(
            f"{name}: running pytest benchmarks"
            + (f" --smoke -k '{SMOKE_SELECTION}' (--quick)" if self.quick else "")
        )
        start = time.perf_counter()
        code = stream(self.bench_command(out), self.root, log, self.display, name)
        seconds = time.perf_counter() - start
        if code != 0 or not out.exists():
            self.display.say(f"{name}: pytest exited {code}; log: {log}")
            tail(log, self.display)
            if not out.exists() or code not in PYTEST_COMPLETED:
                return Step(name, "failed", f"pytest exited {code}, no usable JSON", seconds)
        try:
            from stability.measure.bench import ingest
        except ImportError:
            return Step(name, "failed", "stability.measure.bench.ingest is not available", seconds)
        try:  # the whole JSON is validated: an entry without batch_size stores nothing
            with Store.open(self.db) as store:
                run_id = ingest(out, store, ["stability", "report", "(quick benchmarks)"])
        except StabilityError as exc:
            self.display.say(f"{name}: not stored, {exc}")
            return Step(name, "failed", f"not stored: {exc}", seconds)
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
                "quick": self.quick,
            },
        )
        detail = f"bench run {run_id}: pytest exit {code} in {seconds:.0f} s ({label})"
        self.display.say(f"{name}: {detail}")
        return Step(name, "ran" if code == 0 else "failed", detail, seconds)

    # -- divergence doctor ---------------------------------------------------------------------
    def doctor(self) -> Step:
        """The doctor's default cases and lr map (about 5 s), once per code version."""

        def produce() -> tuple[int, str]:
            tables = doctor_cases.compute()
            with Store.open(self.db) as store:
                return doctor_cases.write(store, tables), ""

        return stored_step(
            self.cache, self.code, self.display, "doctor defaults", "doctor",
            {"version": doctor_cases.VERSION}, lambda run: _run_exists(self.db, run),
            f"diagnosing {len(doctor_cases.DEFAULT_CASES)} runs, lr map", produce,
        )  # fmt: skip

    # -- Jacobian spectrum and edge of chaos ----------------------------------------------------
    def spectrum(self) -> Step:
        """The spectrum and phase-diagram tables (seconds when quick), once per code version."""

        def produce() -> tuple[int, str]:
            tables = spectrum_cases.compute(self.quick)
            with Store.open(self.db) as store:
                return spectrum_cases.write(store, tables), ""

        return stored_step(
            self.cache, self.code, self.display, "spectrum and phase diagram", "spectrum",
            {"version": spectrum_cases.VERSION, "quick": self.quick},
            lambda run: _run_exists(self.db, run),
            "Jacobian spectra per depth, tanh phase diagram", produce,
        )  # fmt: skip
