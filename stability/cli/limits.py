"""What one command may ask of this machine, checked before any work starts.

- Memory: a sweep cell, or a doctor's training run, whose estimated footprint (weights,
  their gradients and optimiser state, activations and their gradients) is more than the
  memory available is refused with the estimate: it would fail to allocate, or swap the
  machine to a halt, after the start-up cost. No flag overrides this.
- Bounds: depth over ``MAX_DEPTH``, doctor steps over ``MAX_STEPS`` and more seeds than
  ``MAX_SEEDS`` (sweep, experiments) are refused with a time estimate unless ``--yes``: a
  typo of three zeros should not occupy a machine for days.
- ``--jobs`` is capped at the number of cells, with a note: a worker with no cell to run
  costs a process start and its memory, and does nothing.

The estimates are deliberately low (only what surely gets allocated, at an optimistic
speed), so a refusal means the run certainly does not fit. docs/exit-codes.md lists the
limits.
"""

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from stability.core.config import MLPConfig
from stability.errors import StabilityError
from stability.sweep.cells import Cell
from stability.sweep.stacks import available_bytes  # one reader of free memory

if TYPE_CHECKING:
    from stability.train.trainer import TrainConfig

MAX_DEPTH = 10_000  # layers; the notes' deepest networks have a few hundred
MAX_STEPS = 100_000  # doctor training steps (and steps per lr trial); the default is 100
MAX_SEEDS = 1_000  # seeds of one sweep or one experiment; the defaults are 3 to 10
SECONDS_PER_LAYER_STEP = 5e-4  # Python and hooks per layer per pass: a floor, not a mean
FLOP_PER_SECOND = 1e11  # the fastest CPU matmul rate to expect: a ceiling, not a mean
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "adam": 2}  # copies of the weights it keeps


def parameters(config: MLPConfig) -> int:
    """Weights and biases of the probe network."""
    return config.depth * (config.width * config.width + (config.width if config.bias else 0))


def cell_bytes(cell: Cell) -> int:
    """Memory one sweep cell surely takes: weights and their gradients, and each layer's
    pre-activation and output with their gradients, in the dtype it computes in."""
    c = cell.config
    item = c.precision.compute_dtype.itemsize
    return item * (2 * parameters(c) + 4 * c.depth * cell.batch * c.width)


def train_bytes(cfg: "TrainConfig") -> int:
    """Memory a doctor's training run surely takes: the cell's, plus optimiser state and the
    data set (inputs and targets)."""
    c = cfg.model
    item = c.precision.compute_dtype.itemsize
    states = OPTIMIZER_STATES.get(cfg.optimizer, 2)
    weights = (2 + states) * parameters(c)
    return item * (weights + 4 * c.depth * cfg.batch * c.width + cfg.samples * (c.width + 1))


def human_bytes(n: float) -> str:
    """``n`` bytes with a binary unit: '23.4 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} YiB"


def human_seconds(s: float) -> str:
    """A duration in the largest unit that keeps it readable."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.3g} {unit}"
    return f"{s:.2g} s"


def check_fits(what: str, need: int, device: str, at_once: int = 1) -> None:
    """Refuse ``at_once`` runs of ``need`` bytes each that ``device`` has no room for."""
    total = need * at_once
    free = available_bytes(device)
    where = f"{device} has" if device.startswith("cuda") else "this machine has"
    if free is not None and total > free:
        together = f", ~{human_bytes(total)} for {at_once} at once (--jobs)" if at_once > 1 else ""
        raise StabilityError(
            f"{what} needs ~{human_bytes(need)}{together}; {where} {human_bytes(free)} available"
        )


def check_bound(
    flag: str, value: int, limit: int, estimate: str, yes: bool, shown: str | None = None
) -> None:
    """Refuse ``value`` over ``limit`` for ``flag`` unless the user said ``--yes``;
    ``shown`` names the value if it is not what was typed (a count of a list)."""
    if value > limit and not yes:
        what = shown or f"{flag} {value}"
        raise StabilityError(
            f"{what} is over the limit of {limit}: {estimate}; pass --yes to run it anyway"
        )


def _describe(c: MLPConfig, batch: int) -> str:
    return f"depth {c.depth}, width {c.width}, batch {batch}, {c.dtype}"


def check_sweep(cells: Sequence[Cell], jobs: int, scheduler: str | None, yes: bool) -> int:
    """Refuse a grid that does not fit or is unbounded; the number of local workers to use."""
    if not cells:
        raise StabilityError("the grid has no cells: every list needs at least one value")
    local = scheduler is None or scheduler == "local"
    if local and jobs > len(cells):
        print(f"note: --jobs {jobs} capped at {len(cells)}, the number of cells", file=sys.stderr)
        jobs = len(cells)
    if local:  # a remote cluster's memory is not this machine's to judge
        for device in sorted({c.config.device for c in cells}):
            big = max((c for c in cells if c.config.device == device), key=cell_bytes)
            what = f"a cell of {_describe(big.config, big.batch)}"
            # Asking CUDA for free memory starts its context here, which forked pool workers
            # could then not use: with --jobs > 1 the workers find out for themselves.
            if jobs == 1 or not device.startswith("cuda"):
                check_fits(what, cell_bytes(big), device, at_once=jobs)
            if device.startswith("cuda"):  # built on the CPU in float32, then moved
                check_fits(f"building {what}", 4 * parameters(big.config), "cpu")
    deepest = max(cells, key=lambda c: c.config.depth)
    seconds = sum(_pass_seconds(c.config, c.batch) for c in cells)
    estimate = f"at least ~{human_seconds(seconds)} for {len(cells)} cell{'s' * (len(cells) > 1)}"
    check_bound("--depth", deepest.config.depth, MAX_DEPTH, estimate, yes)
    return jobs


def check_seeds(count: int, yes: bool, listed: bool = False) -> None:
    """Refuse more than ``MAX_SEEDS`` seeds unless ``--yes``: a count
    (``experiments --seeds 100000000``) or, ``listed``, a comma list's length (sweep),
    checked before the grid of cells is built."""
    shown = f"--seeds: {count} seeds" if listed else None
    each = "every seed is one more network per cell" if listed else "every seed trains again"
    check_bound("--seeds", count, MAX_SEEDS, each, yes, shown)


def _pass_seconds(c: MLPConfig, batch: int) -> float:
    """A floor on one forward and backward pass: per-layer overhead plus the matmuls."""
    flop = 6 * batch * c.width * c.width * c.depth
    return c.depth * SECONDS_PER_LAYER_STEP + flop / FLOP_PER_SECOND


def check_doctor(cfg: "TrainConfig", trial_steps: int, yes: bool) -> None:
    """Refuse a doctor run that does not fit in memory or is unbounded."""
    c = cfg.model
    check_fits(f"training depth {c.depth}, width {c.width}, batch {cfg.batch}, {c.dtype}",
               train_bytes(cfg), c.device)  # fmt: skip
    step = _pass_seconds(c, cfg.batch)
    check_bound("--depth", c.depth, MAX_DEPTH, f"at least ~{human_seconds(step)} per step", yes)
    for flag, steps, what in (
        ("--steps", cfg.steps, "of training"),
        ("--trial-steps", trial_steps, "per lr trial"),
    ):
        estimate = f"at least ~{human_seconds(steps * step)} {what} at depth {c.depth}"
        check_bound(flag, steps, MAX_STEPS, estimate, yes)
