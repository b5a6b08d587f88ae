"""Freed memory kept for reuse: the stacked probe stops faulting in fresh pages.

Each count comes from its own fresh process (the setting is per process and one-way). The
known-bad variant is the same process with glibc's default thresholds (128 KiB), held
fixed: it faults in new pages for every large tensor, many times more than with the
setting. (Left to itself glibc raises its threshold to the largest block freed so far, up
to 32 MiB, so how often it faults depends on the order blocks happen to be freed in.)"""

import subprocess
import sys
from pathlib import Path

import pytest

from stability.core.allocator import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import ctypes, resource, statistics, sys, torch
from stability.core import allocator
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    assert allocator.keep_freed_memory()
else:  # glibc's own thresholds (128 KiB), fixed: its dynamic raise would make the count
    # depend on which block happened to be freed first (once in ten runs: none at all)
    mallopt = ctypes.CDLL("libc.so.6").mallopt
    assert mallopt(allocator.M_MMAP_THRESHOLD, 128 * 1024)
    assert mallopt(allocator.M_TRIM_THRESHOLD, 128 * 1024)
from stability.core.config import MLPConfig
from stability.core.stacked import probe_stack
stacks = [[MLPConfig(depth=10, width=256, activation=a, init="xavier_normal", seed=s)
           for s in range(4)] for a in ("tanh", "relu", "identity")]  # a sweep alternates
for cells in stacks:
    probe_stack(cells, 256)
runs = []
for _ in range(7):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for cells in stacks:
        probe_stack(cells, 256)
    runs.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(statistics.median(runs))
"""


def faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return int(float(out.stdout.strip()))


def test_keep_freed_memory_is_idempotent() -> None:
    assert keep_freed_memory() == keep_freed_memory()


@pytest.mark.skipif(not keep_freed_memory(), reason="not glibc: mallopt is not there")
def test_kept_memory_cuts_the_stacked_probes_page_faults() -> None:
    kept, default = faults("keep"), faults("default")
    # The median faults of 7 runs (a tanh, a relu and an identity stack) after a warm one.
    # Not the total of a few runs: kept memory still faults now and then while its heap
    # grows (0 to 1,792 a run here); the fixed default: 82,160 every run.
    assert kept * 4 < default, (kept, default)
