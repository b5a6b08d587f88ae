"""One description of this machine and its software, for every place that records it.

The baseline's fingerprint, the report's cache key and environment table, the store's run
record and the Dask worker check each used to read these facts their own way (the CPU name
in two places, with two fallbacks). They now select keys from ``environment()``, so a
fact is read one way everywhere and each caller still records only what it needs.

Only the facts asked for are read: ``git_commit`` runs git, and ``cuda_devices``
initialises CUDA, which must not happen in a process that later forks CUDA workers.
"""

import functools
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stability.errors import StabilityError

NOT_INSTALLED = "unknown (not installed)"


@functools.cache
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else ``platform.processor()``, else
    'unknown'. Read once per process: the machine does not change under it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit(cwd: Path | None = None) -> str | None:
    """The checked-out commit (with ``-dirty`` if the tree has changes), or None outside git."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("-dirty" if dirty else "")


def _stability_version() -> str:
    try:  # the installed distribution: what `pip install` put on this machine
        return importlib.metadata.version("stability")
    except importlib.metadata.PackageNotFoundError:  # a source tree on PYTHONPATH
        return NOT_INSTALLED


def _cuda_devices() -> list[str]:
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


# Every fact, in the order environment() lists them; each reader takes the git folder.
_READERS: dict[str, Callable[[Path | None], Any]] = {
    "python": lambda _: platform.python_version(),  # full, e.g. '3.11.9'
    "stability": lambda _: _stability_version(),
    "torch": lambda _: str(torch.__version__),  # a plain str, not TorchVersion: JSON-safe
    "numpy": lambda _: str(np.__version__),
    "system": lambda _: platform.system(),
    "machine": lambda _: platform.machine(),
    "platform": lambda _: platform.platform(),
    "host": lambda _: platform.node(),
    "cpu_model": lambda _: cpu_model(),
    "cpu_count": lambda _: os.cpu_count(),
    "torch_threads": lambda _: torch.get_num_threads(),
    "cuda_devices": lambda _: _cuda_devices(),  # [] without CUDA
    "git_commit": git_commit,  # None outside a git checkout
}
KEYS = tuple(_READERS)


def environment(keys: Iterable[str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
    """This machine and software: ``keys`` of ``KEYS`` (all by default), in the order given.

    ``cwd`` is the folder whose git commit is read (default: the current directory).
    """
    wanted = KEYS if keys is None else tuple(keys)
    unknown = [k for k in wanted if k not in _READERS]
    if unknown:
        message = f"unknown environment key {unknown[0]!r}; expected one of {sorted(KEYS)}"
        raise StabilityError(message)
    return {k: _READERS[k](cwd) for k in wanted}
