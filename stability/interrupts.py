"""Ctrl-C that waits for a block to finish: writes that belong together, and cleanup.

A ``KeyboardInterrupt`` can land between any two bytecodes. Inside ``deferred_interrupt()``
SIGINT is only noted; the block runs to its end and the interrupt is raised after it, so a
set of files is written whole or not at all, and a ``finally`` that removes temporary git
worktrees is not itself cut short by a second Ctrl-C.
"""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold SIGINT until the block ends, then raise ``KeyboardInterrupt`` if one came.

    Signal handlers belong to the main thread, and only Python's own SIGINT handler raises
    ``KeyboardInterrupt``: in another thread, or where SIGINT is ignored or handled by
    someone else, this is a plain block.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    caught: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
