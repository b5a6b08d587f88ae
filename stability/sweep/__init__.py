"""Sweeps: the grid of cells, the run loop, and the executors (in process, process pool, Dask)."""
