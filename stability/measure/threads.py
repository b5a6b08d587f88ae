"""Torch's intra-op thread count, set for a block of work and always restored.

The count is process-wide state: a setter without a restore leaks one benchmark's or one
test's choice into everything that runs after it in the process.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def threads(n: int | None) -> Iterator[int]:
    """Run the block with ``n`` intra-op threads (None or 0: keep the current count).

    Yields the count in force; the one before is restored on the way out, also on error.
    """
    before = torch.get_num_threads()
    try:
        if n:
            torch.set_num_threads(n)
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
