"""figure_spread's worker side: the grid run once per planted change, in a fresh process.

Lives apart from the driver so each file holds one concept: this one runs *inside* the
variant's process (its environment already set) and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

FIGURES_FALLBACK = ("preact_var", "act_var", "grad_var")
# Environment the variants control; all are removed for the reference.
CONTROLLED_ENV = (
    "ATEN_CPU_CAPABILITY",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_CBWR",
    "MKL_DEBUG_CPU_TYPE",
    "MKL_VERBOSE",
    "MKL_NUM_THREADS",
    "OMP_NUM_THREADS",
)


def baseline_module() -> ModuleType:
    """``stability.measure.baseline``, or ``stability.baseline`` in revisions before the wings."""
    try:
        return importlib.import_module("stability.measure.baseline")
    except ImportError:
        return importlib.import_module("stability.baseline")


def figure_names(mod: ModuleType) -> tuple[str, ...]:
    return tuple(getattr(mod, "FIGURES", FIGURES_FALLBACK))


@contextlib.contextmanager
def captured_stdout() -> Iterator[list[str]]:
    """Capture what C code prints to fd 1 (MKL's verbose lines); the text lands in the list."""
    got: list[str] = []
    sys.stdout.flush()
    fd = sys.stdout.fileno()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield got
        finally:
            sys.stdout.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            got.append(tmp.read().decode(errors="replace"))


def mkl_path() -> dict[str, str]:
    """MKL's own word on the code path it takes (its verbose header and CNR mode)."""
    import torch

    if not torch.backends.mkl.is_available():  # type: ignore[no-untyped-call]
        return {"header": "MKL not available", "cnr": "-", "threads": "-"}
    a = torch.ones(64, 64, dtype=torch.float64)
    verbose = torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON)  # type: ignore[no-untyped-call]
    with captured_stdout() as got, verbose:
        torch.mm(a, a)
    lines = [ln for ln in "".join(got).splitlines() if ln.startswith("MKL_VERBOSE")]
    header = lines[0].removeprefix("MKL_VERBOSE ").strip() if lines else "?"
    cnr, nthr = "?", "?"
    for ln in lines[1:]:
        if "CNR:" in ln:
            cnr = ln.split("CNR:", 1)[1].split()[0]
            nthr = ln.split("NThr:", 1)[1].split()[0] if "NThr:" in ln else "?"
            break
    return {"header": header, "cnr": cnr, "threads": nthr}


@contextlib.contextmanager
def bessel() -> Iterator[None]:
    """The probe's variances with Bessel's correction (n - 1), as a plausible small slip."""
    probe = importlib.import_module(
        "stability.core.probe"
    )  # the module, not stability.core.probe()
    original = probe._host_summary

    def corrected(flat: Any, extremes: bool) -> list[float]:
        out: list[float] = original(flat, extremes)
        n = flat.numel()
        if n > 1:
            out[1] *= n / (n - 1)
        return out

    probe._host_summary = corrected  # type: ignore[attr-defined]
    try:
        yield
    finally:
        probe._host_summary = original  # type: ignore[attr-defined]


def planted(plant: str) -> contextlib.AbstractContextManager[None]:
    """A planted change for the duration: ``halve_kaiming``, ``bessel`` or ``gain=DELTA``."""
    from stability.core.inits import INITS

    @contextlib.contextmanager
    def swap(make: Callable[[Any], Any], names: Sequence[str]) -> Iterator[None]:
        saved = {n: INITS[n] for n in names}
        try:
            for n in names:
                INITS[n] = make(saved[n])
            yield
        finally:
            INITS.update(saved)

    def scaled(init: Any, factor: float) -> Any:
        def apply(weight: Any, gen: Any) -> None:
            init.apply(weight, gen)
            weight.data.mul_(factor)

        return dataclasses.replace(init, apply=apply)

    if plant == "none":
        return contextlib.nullcontext()
    if plant == "halve_kaiming":  # as scripts/prove_gate.py plants it
        return swap(lambda i: scaled(i, math.sqrt(0.5)), ["kaiming_normal"])
    if plant == "bessel":  # every variance times n/(n-1): 1/4095 = 2.4e-4 for 64x64
        return bessel()
    if plant.startswith("gain="):
        delta = float(plant.split("=", 1)[1])
        names = [n for n, i in INITS.items() if not i.data_driven]
        return swap(lambda i: scaled(i, 1.0 + delta), names)
    raise ValueError(f"unknown plant {plant!r}")


def worker(args: argparse.Namespace) -> int:
    """Run the grid once per plant under this process's settings; write JSON to --worker-out."""
    import torch

    mod = baseline_module()
    mod.THREADS = args.threads  # type: ignore[attr-defined]  # stability_figures() uses it
    torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision(args.matmul_precision)
    torch.backends.mkldnn.enabled = not args.no_mkldnn  # type: ignore[assignment]
    info = {
        "module": mod.__name__,
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": args.threads,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "mkldnn": torch.backends.mkldnn.enabled,
        "mkl": mkl_path(),  # after set_num_threads: its thread count is the one in force
        "env": {k: os.environ[k] for k in CONTROLLED_ENV if k in os.environ},
    }
    runs: dict[str, Any] = {}
    start = time.perf_counter()
    for plant in args.plants.split(","):
        with planted(plant):
            runs[plant] = mod.stability_figures()
    info["seconds"] = time.perf_counter() - start
    info["figures"] = list(figure_names(mod))
    Path(args.worker_out).write_text(json.dumps({"info": info, "runs": runs}))
    return 0
