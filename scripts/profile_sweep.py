"""Profile the stacked sweep in process on the benchmarks' grid (issue 27's shares).

``PYTHONPATH=$PWD python scripts/profile_sweep.py DEPTH WIDTH THREADS [cpu|wall]``: the
40 cells (5 activations x 4 inits x 2 seeds, float32, batch = width) through
``VectorisedExecutor(1)`` after one warm stack, under cProfile timed in this thread's CPU
time (``cpu``, steady under a neighbour's load) or wall-clock time (``wall``); prints the
top functions by cumulative and by own time. A sampling view of the same run:
``py-spy record -r 200 -f raw -o out.txt -- python scripts/profile_sweep.py 50 256 1``.
"""

import cProfile
import pstats
import sys
import time

import torch

from stability.sweep.cells import SweepGrid
from stability.sweep.vectorised import VectorisedExecutor

ACTIVATIONS = ("identity", "relu", "tanh", "scaled_logistic", "selu")
INITS = ("torch_default", "xavier_normal", "kaiming_normal", "lecun_normal")


def main(argv: list[str]) -> int:
    depth, width, threads = (int(a) for a in argv[:3])
    clock = argv[3] if len(argv) > 3 else "cpu"
    torch.set_num_threads(threads)
    grid = SweepGrid(ACTIVATIONS, INITS, (depth,), (width,), ("float32",), (0, 1), (width,))
    cells = grid.cells()
    executor = VectorisedExecutor(1, 2**30)
    list(executor.run(cells[8:16]))  # warm: one stack (relu); the others' bands still to compute
    profile = cProfile.Profile(time.thread_time) if clock == "cpu" else cProfile.Profile()
    wall, cpu = time.perf_counter(), time.thread_time()
    profile.enable()
    list(executor.run(cells))
    profile.disable()
    print(f"wall {time.perf_counter() - wall:.2f} s, thread CPU {time.thread_time() - cpu:.2f} s")
    stats = pstats.Stats(profile)
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(12)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
