"""Keep freed tensor memory in the process for the next tensor, instead of returning it.

torch's CPU tensors come from glibc's ``malloc``. glibc serves a block above its mmap
threshold (128 KiB at start) with a fresh ``mmap`` and unmaps it on ``free``, so every
such tensor, each layer's output, gradient and reduction temporary, faults in new zeroed
pages: the stacked sweep at width 256 took 175,000 page faults per run, about a sixth of its
time, and a 2 MiB reduction that takes 0.1 ms alone took 1.5-2 ms inside it (issue 27).
Raising the mmap threshold to glibc's ceiling and the trim threshold to 1 GiB lets freed
blocks stay in the heap and be reused; the sweep then takes a handful of faults a run (a
64 MiB trim threshold still left 240,000: a stack frees its layers whole, at the top).

Nothing numerical changes: only where the bytes live. The process keeps up to its peak
heap, up to 1 GiB of it free; its peak is set by the stack budget anyway.
Elsewhere than glibc (macOS, musl, Windows) this does nothing.
"""

import ctypes
import ctypes.util
import functools
import sys

M_TRIM_THRESHOLD = -1  # malloc.h's mallopt parameters
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's ceiling on 64-bit (4 * 1 MiB * sizeof(long))
TRIM_THRESHOLD = 2**30  # free heap kept at the top: one stack's layers come and go whole


@functools.cache  # once per process (a forked child inherits the setting)
def keep_freed_memory() -> bool:
    """Tell glibc to keep freed blocks of up to 32 MiB for reuse; True where it did.

    Idempotent and cheap; called where a sweep starts and in each pool worker."""
    done = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc (musl has no mallopt)
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            mallopt.restype = ctypes.c_int
            done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(
                mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            )
    return done
