"""Freed memory kept for reuse: the stacked probe stops faulting in fresh pages.

Each count comes from its own fresh process (the setting is per process and one-way). The
known-bad variant is the same process without the setting, glibc's default: it faults in
new pages for every large tensor, many times more than with it."""

import subprocess
import sys
from pathlib import Path

import pytest

from stability.core.allocator import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import resource, sys, torch
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    from stability.core.allocator import keep_freed_memory
    assert keep_freed_memory()
from stability.core.config import MLPConfig
from stability.core.stacked import probe_stack
cells = [MLPConfig(depth=10, width=128, activation="tanh", init="xavier_normal", seed=s)
         for s in range(4)]
probe_stack(cells, 128)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    probe_stack(cells, 128)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def test_keep_freed_memory_is_idempotent() -> None:
    assert keep_freed_memory() == keep_freed_memory()


@pytest.mark.skipif(not keep_freed_memory(), reason="not glibc: mallopt is not there")
def test_kept_memory_cuts_the_stacked_probes_page_faults() -> None:
    kept, default = faults("keep"), faults("default")
    # Measured on glibc 2.36: about 500 against 6,000 (the default faults every layer in).
    assert kept * 4 < default, (kept, default)
