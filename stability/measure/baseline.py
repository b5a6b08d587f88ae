"""Baselines for the CI gate: a reviewable JSON of what this code computes and how fast.

A baseline holds (1) the stability figures of a fixed small grid on CPU, float64 and
float32, fixed seeds, one thread (bit-for-bit deterministic on one machine and torch
build): per-layer pre-activation, activation and gradient variances from the probe,
(2) the training-step efficiency against a same-run GEMM, per timed round, so the gate
can test a change for significance, (3) the environment fingerprint that both must share,
and (4) who wrote it, when and why. ``stability baseline --reason "..."`` rewrites it.

The grid's first cells take the activation and init from ``MLPConfig``'s defaults, so a
changed default shows up as a changed cell.
"""

import datetime as dt
import getpass
import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stability.core.config import MLPConfig
from stability.errors import StabilityError
from stability.measure import baseline_schema as schema
from stability.measure.calibration import Gemm
from stability.measure.interleave import efficiency
from stability.measure.stats import min_samples
from stability.measure.steps import compute_dtype, make_train_step
from stability.measure.threads import threads
from stability.measure.timer import Timer
from stability.results.environment import environment
from stability.results.files import read_input, write_text
from stability.sweep.cells import Cell, run_cell

FORMAT = "stability-baseline"
VERSION = 1
DEFAULT_PATH = Path("baselines") / "baseline.json"
FIGURES = schema.FIGURES
GRID_DEPTH = 10
GRID_WIDTH = 64
GRID_BATCH = 64
GRID_DTYPES = ("float64", "float32")
GRID_SEEDS = (0, 1)
# Beside the defaults: one saturating and one self-normalising pair from the notes.
GRID_EXTRA = (("tanh", "xavier_normal"), ("selu", "lecun_normal"))
# The timed step: small enough that a round is ~10-20 ms, big enough to be GEMM-bound.
SPEED_CONFIG = MLPConfig(depth=4, width=256, dtype="float32", device="cpu")
SPEED_BATCH = 256
SPEED_ROUNDS = 20
THREADS = 1  # determinism of the figures, and steadier timing on a shared machine


def grid(activation: str | None = None, init: str | None = None) -> list[Cell]:
    """The fixed stability grid: the default pair first, then ``GRID_EXTRA``.

    ``activation``/``init`` replace ``MLPConfig``'s defaults for the first cells: the gate
    rebuilds the grid a baseline was written with from the defaults it recorded.
    """
    first = {
        **({"activation": activation} if activation else {}),
        **({"init": init} if init else {}),
    }
    cells = []
    for dtype in GRID_DTYPES:
        for seed in GRID_SEEDS:
            base = {"depth": GRID_DEPTH, "width": GRID_WIDTH, "dtype": dtype, "seed": seed}
            cells.append(Cell(MLPConfig(**base, **first), GRID_BATCH))  # type: ignore[arg-type]
            for act, ini in GRID_EXTRA:
                config = MLPConfig(activation=act, init=ini, **base)  # type: ignore[arg-type]
                cells.append(Cell(config, GRID_BATCH))
    return cells


def recorded_grid(defaults: Mapping[str, Any]) -> list[Cell]:
    """The grid as it was when a baseline recorded ``defaults`` (activation and init)."""
    try:
        return grid(str(defaults.get("activation")), str(defaults.get("init")))
    except StabilityError as exc:
        raise CannotJudge(f"the baseline's defaults are not usable here: {exc}") from None


def cell_name(cell: Cell) -> str:
    """A short readable key: ``relu/kaiming_normal/float32/d10w64/b64/s0``."""
    c = cell.config
    return f"{c.activation}/{c.init}/{c.dtype}/d{c.depth}w{c.width}/b{cell.batch}/s{c.seed}"


def stability_figures(cells: Sequence[Cell] | None = None) -> dict[str, dict[str, Any]]:
    """Per cell: its config and the per-layer figures (one thread: bit-reproducible)."""
    out: dict[str, dict[str, Any]] = {}
    with threads(THREADS):
        for cell in grid() if cells is None else cells:
            rows = run_cell(cell)
            out[cell_name(cell)] = {
                "dtype": cell.config.dtype,
                "config": {**cell.config.as_dict(), "batch": cell.batch},
                **{f: [float(r[f]) for r in rows] for f in FIGURES},
            }
    return out


def efficiency_samples(rounds: int = SPEED_ROUNDS) -> dict[str, Any]:
    """Per round, the training step's GFLOP/s over the GEMM's, timed in alternating blocks.

    Pairing each step block with a GEMM block (``stability.measure.interleave``) cancels the
    neighbours' load, which moves on a scale of seconds: a GEMM timed only before and after
    the whole run let one A/A efficiency read 0.52x of another's on this machine.
    """
    with threads(THREADS) as used:
        step = make_train_step(SPEED_CONFIG, SPEED_BATCH)
        gemm = Gemm(SPEED_BATCH, SPEED_CONFIG.width, compute_dtype(step), "cpu")
        eff = efficiency(Timer(step, "cpu"), step.flops, Timer(gemm, "cpu"), gemm.flops, rounds)
    return {
        "config": {**SPEED_CONFIG.as_dict(), "batch": SPEED_BATCH},
        "threads": used,
        "calib_gflops": eff.calib_gflops_rounds(),
        "seconds": list(eff.step.samples),
        "efficiency": eff.rounds(),
        "nonfinite_losses": step.nonfinite(),
    }


def fingerprint() -> dict[str, Any]:
    """What must match for a comparison to mean anything (not the host name: CI hosts vary)."""
    env = environment(("python", "torch", "system", "machine", "cpu_model", "cpu_count"))
    # Committed baselines hold exactly these keys and values: python as major.minor, and
    # the threads the figures are computed with, not this process's.
    return {**env, "python": ".".join(env["python"].split(".")[:2]), "threads": THREADS}


def _who() -> str:
    try:
        name = subprocess.run(
            ["git", "config", "user.name"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        name = ""
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def defaults() -> dict[str, Any]:
    # The defaults as a row: a field whose default is "absent" (bias_var = 0) stays out, so
    # a baseline written before that field existed still matches.
    return MLPConfig().as_dict()


def measure(reason: str, rounds: int = SPEED_ROUNDS) -> dict[str, Any]:
    """A complete baseline document (also what the gate measures to compare)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": {
            "by": _who(),
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "why": reason,
            "commit": environment(("git_commit",))["git_commit"],
        },
        "environment": fingerprint(),
        "defaults": defaults(),
        "stability": stability_figures(),
        "throughput": efficiency_samples(rounds),
    }


def write(path: Path | str, reason: str, rounds: int = SPEED_ROUNDS) -> dict[str, Any]:
    if not reason.strip():
        raise StabilityError("a baseline needs a reason: pass --reason 'why it changed'")
    doc = measure(reason, rounds)
    write_text(Path(path), json.dumps(doc, indent=1, sort_keys=False) + "\n", "baseline file")
    return doc


class CannotJudge(StabilityError):
    """The baseline is missing, unreadable, of another format, or from another machine."""


REBASELINE = "write one with: stability baseline --reason '...'"


def min_efficiency_samples() -> int:
    """Fewest baseline rounds that could ever show a slowdown at ``ALPHA`` against a run."""
    return min_samples(SPEED_ROUNDS)


def load(path: Path | str) -> dict[str, Any]:
    """Read and check a baseline; ``CannotJudge`` says what is wrong and what to do."""
    path = Path(path)
    if not path.exists():
        raise CannotJudge(f"no baseline at {str(path)!r}; {REBASELINE}")
    try:
        doc = json.loads(read_input(path, "baseline").decode("utf-8"))
    except StabilityError as exc:  # not a regular file, or over the size limit
        raise CannotJudge(f"{exc}; {REBASELINE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CannotJudge(
            f"baseline {str(path)!r} is unreadable ({exc}); restore it from git "
            f"(git checkout -- {path}) or {REBASELINE}"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CannotJudge(f"{str(path)!r} is not a stability baseline; {REBASELINE}")
    if doc.get("version") != VERSION or isinstance(doc.get("version"), bool):
        raise CannotJudge(
            f"baseline {str(path)!r} has format version {doc.get('version')!r}, this gate "
            f"reads version {VERSION}; {REBASELINE}"
        )
    try:
        schema.validate(
            doc,
            lambda defaults: [cell_name(c) for c in recorded_grid(defaults)],
            min_efficiency_samples(),
        )
    except StabilityError as exc:
        raise CannotJudge(f"baseline {str(path)!r} is invalid: {exc}; {REBASELINE}") from None
    return doc
