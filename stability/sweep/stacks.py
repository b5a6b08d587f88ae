"""Plan the vectorised sweep: which cells run together as one stacked network, and how many.

Cells stack when they share a shape (``core.stacked.shape_key``: activation, depth, width,
dtype, bias, device, batch); inits and seeds differ inside a stack. A stack's memory grows
with its size, so each shape's cells are cut into equal stacks that fit the memory budget
(``--memory-budget``; by default a share of what the device has free). With several
workers, stacks are also cut small enough that every worker gets several: five stacks on
two workers would leave one idle for a fifth of the run.
"""

import math
import os
import re
from collections.abc import Sequence

from stability.core.stacked import ShapeKey, shape_key
from stability.errors import StabilityError
from stability.sweep.cells import Cell

CPU_BUDGET_SHARE = 0.25  # of the memory available when the sweep starts
CPU_BUDGET_CAP = 4 * 2**30  # beyond this, larger stacks gain nothing on a CPU
CUDA_BUDGET_SHARE = 0.5  # of the GPU's free memory
FALLBACK_BUDGET = 2**30  # where the free memory cannot be told
STACKS_PER_WORKER = 4  # with --jobs N > 1, at least this many stacks per worker
TRANSIENTS = 6  # batch x width tensors per layer alive at once: saved for backward, rounded
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 2**20, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def stacked_cell_bytes(cell: Cell) -> int:
    """Memory one cell adds to a stack: its weights and their gradients, the layer tensors
    kept for the backward pass and the transients of emulated rounding."""
    c = cell.config
    item = c.precision.compute_dtype.itemsize
    return item * (2 * c.depth * c.width * c.width + TRANSIENTS * c.depth * cell.batch * c.width)


def parse_budget(text: str) -> int:
    """``--memory-budget``: '512M', '2G', '1.5GiB' or a number of MiB, in bytes."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise StabilityError(
            f"memory budget must be a positive size like 512M, 2G or 1.5GiB (a bare number is "
            f"MiB), got {text!r}"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def default_budget(device: str) -> int:
    """A share of the memory free on ``device``: a stack that fits leaves room for the rest."""
    available = available_bytes(device)
    if available is None:
        return FALLBACK_BUDGET
    if device.startswith("cuda"):
        return int(available * CUDA_BUDGET_SHARE)
    return int(min(CPU_BUDGET_CAP, available * CPU_BUDGET_SHARE))


def available_bytes(device: str = "cpu") -> int | None:
    """Memory free for a new allocation on ``device``; None when it cannot be told."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None  # the missing device is refused with its own message
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def group_by_shape(cells: Sequence[Cell]) -> list[list[Cell]]:
    """Cells grouped by shape, groups and cells in the order they first appear."""
    groups: dict[ShapeKey, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(shape_key(cell.config, cell.batch), []).append(cell)
    return list(groups.values())


def plan_stacks(cells: Sequence[Cell], budget: int, jobs: int = 1) -> list[list[Cell]]:
    """The stacks to run: each shape's cells cut into equal parts that fit ``budget`` bytes
    each (a cell too large for the budget alone runs alone) and, with ``jobs`` > 1, into at
    least ``STACKS_PER_WORKER`` stacks per worker overall."""
    if budget <= 0:
        raise StabilityError(f"memory budget must be positive, got {budget} bytes")
    most = math.ceil(len(cells) / (STACKS_PER_WORKER * jobs)) if jobs > 1 else len(cells)
    stacks: list[list[Cell]] = []
    for group in group_by_shape(cells):
        fit = max(1, budget // max(1, stacked_cell_bytes(group[0])))
        size = max(1, min(fit, most))
        parts = math.ceil(len(group) / size)
        per = math.ceil(len(group) / parts)  # equal parts: 21 cells by 10 are 7, 7, 7
        stacks.extend(group[i : i + per] for i in range(0, len(group), per))
    return stacks
