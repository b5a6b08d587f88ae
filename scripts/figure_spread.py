#!/usr/bin/env python
"""Spread of the gate's stability figures across the CPU code paths reachable on this machine.

The gate compares ``stability_figures()`` (per-layer preact/act/grad variances of the fixed
12-cell baseline grid) with a committed baseline written on another machine. How far may a
figure move when only the *machine* changes? This script measures it: it reruns the grid
in fresh subprocesses under variants that change the numeric code path without changing the
code under test, and compares each with

- the reference: this machine, none of the variables below set, 1 thread, and
- the committed baseline (``baselines/baseline.json``, written on another CPU).

Variants (each a fresh process, since the settings are read once at start-up):

- ``ATEN_CPU_CAPABILITY`` = default | avx2 | avx512 (if the CPU has AVX-512): ATen's own
  vectorised kernels (reductions, activations, ``normal_``'s Box-Muller);
- ``MKL_ENABLE_INSTRUCTIONS`` = SSE4_2 | AVX | AVX2 | AVX512 (if supported) and ``MKL_CBWR``
  = COMPATIBLE | AUTO,STRICT: the BLAS kernels behind Linear, mm and dot;
- torch threads 1 and 2 (``baseline.THREADS``);
- ``torch.set_float32_matmul_precision`` high / medium, and oneDNN (mkldnn) disabled;
- two combinations of the above.

Then it plants known changes (Kaiming's variance halved; Bessel's n-1 in every variance;
every init's gain times 1 + delta) to show what the recommended tolerance still catches.
Output: a table on stdout and a JSON file.

    python scripts/figure_spread.py                # full run, ~1.5 min on 2 busy cores
    python scripts/figure_spread.py --quick        # 4 variants and 4 plants, ~30 s
    python scripts/figure_spread.py --margin 100 --rounding up --out /tmp/spread.json
    python scripts/figure_spread.py --report results/figure_spread.json   # tables again
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = ROOT / "baselines" / "baseline.json"
DEFAULT_OUT = ROOT / "results" / "figure_spread.json"
FIGURES_FALLBACK = ("preact_var", "act_var", "grad_var")
DTYPES = ("float64", "float32")
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
AVX512_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq")  # what ATen's avx512 needs
GAIN_DELTAS_FULL = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 3e-7, 1e-7, 1e-8, 1e-9, 1e-10)
GAIN_DELTAS_QUICK = (1e-3, 1e-6)
WORKER_TIMEOUT_S = 600


# -- variants --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One way of running the grid: environment, torch threads, matmul settings."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    threads: int = 1
    matmul_precision: str = "highest"
    mkldnn: bool = True
    note: str = ""

    def args(self) -> list[str]:
        """The worker's command-line flags for this variant."""
        out = ["--threads", str(self.threads), "--matmul-precision", self.matmul_precision]
        return out if self.mkldnn else [*out, "--no-mkldnn"]


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    """The CPU's model name, read where the gate's fingerprint reads it."""
    from stability.results.environment import cpu_model as read

    return read()


def variants(quick: bool, flags: set[str], mkl: bool) -> tuple[list[Variant], list[str]]:
    """The variants to run (reference first) and a note for each one left out."""
    avx512 = all(f in flags for f in AVX512_FLAGS)
    skipped: list[str] = []
    ref = Variant("reference", note="no controlled env set, 1 thread")
    if quick:
        out = [
            ref,
            Variant("aten=default", {"ATEN_CPU_CAPABILITY": "default"}),
            Variant("mkl_isa=SSE4_2", {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}),
            Variant("threads=2", threads=2),
        ]
        return out, ["--quick: the other variants"]
    out = [ref, Variant("reference-repeat", note="determinism check: must be 0")]
    out += [Variant("aten=default", {"ATEN_CPU_CAPABILITY": "default"}, note="scalar ATen")]
    out += [Variant("aten=avx2", {"ATEN_CPU_CAPABILITY": "avx2"})]
    if avx512:
        out.append(Variant("aten=avx512", {"ATEN_CPU_CAPABILITY": "avx512"}))
    else:
        skipped.append("aten=avx512 (CPU lacks " + "/".join(AVX512_FLAGS) + ")")
    if mkl:
        for isa in ("SSE4_2", "AVX", "AVX2", "AVX512"):
            if isa == "AVX512" and not avx512:
                skipped.append("mkl_isa=AVX512 (CPU lacks AVX-512)")
                continue
            if isa.lower() not in flags:
                skipped.append(f"mkl_isa={isa} (CPU lacks {isa.lower()})")
                continue
            out.append(Variant(f"mkl_isa={isa}", {"MKL_ENABLE_INSTRUCTIONS": isa}))
        out.append(Variant("mkl_cbwr=COMPATIBLE", {"MKL_CBWR": "COMPATIBLE"}))
        out.append(Variant("mkl_cbwr=AUTO,STRICT", {"MKL_CBWR": "AUTO,STRICT"}))
    else:
        skipped.append("all MKL variants (torch.backends.mkl.is_available() is False)")
    out.append(Variant("threads=2", threads=2))
    out.append(Variant("matmul=high", matmul_precision="high"))
    out.append(Variant("matmul=medium", matmul_precision="medium"))
    out.append(Variant("mkldnn=off", mkldnn=False))
    combo = {"ATEN_CPU_CAPABILITY": "default"}
    if mkl:
        out.append(
            Variant("aten=default+mkl_isa=SSE4_2", {**combo, "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"})
        )
        combo = {**combo, "MKL_CBWR": "COMPATIBLE"}
    out.append(Variant("aten=default+cbwr+threads=2", combo, threads=2))
    return out, skipped


# -- worker (runs in the subprocess) -----------------------------------------------------------
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


# -- driver ----------------------------------------------------------------------------------
def run_worker(
    python: str, env_extra: dict[str, str], flags: list[str], plants: Sequence[str]
) -> dict[str, Any]:
    """One fresh process: the grid under ``env_extra`` and ``flags``; its JSON as a dict."""
    env = {k: v for k, v in os.environ.items() if k not in CONTROLLED_ENV}
    env.update(env_extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        cmd = [python, str(Path(__file__).resolve()), "--worker-out", str(out)]
        cmd += [*flags, "--plants", ",".join(plants)]
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False
        )
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"worker failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}"
            )
        doc: dict[str, Any] = json.loads(out.read_text())
        return doc


def rel_diff(now: float, base: float) -> float:
    """``|now - base| / |base|``; 0 for equal non-finite values, inf for any other mismatch."""
    if math.isnan(now) or math.isnan(base):
        return 0.0 if math.isnan(now) and math.isnan(base) else math.inf
    if math.isinf(now) or math.isinf(base) or base == 0.0:
        return 0.0 if now == base else math.inf
    return abs(now - base) / abs(base)


def compare(
    now: dict[str, Any], base: dict[str, Any], figures: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per dtype: max relative difference overall, per layer index and per figure, and where."""
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(base.keys() & now.keys()):
        dtype = str(base[name].get("dtype"))
        d = out.setdefault(
            dtype,
            {
                "max": 0.0,
                "where": None,
                "per_layer": [],
                "per_figure": {},
                "values": 0,
                "differ": 0,
            },
        )
        for fig in figures:
            for layer, (b, n) in enumerate(zip(base[name][fig], now[name][fig], strict=True)):
                r = rel_diff(float(n), float(b))
                d["values"] += 1
                d["differ"] += r != 0.0
                while len(d["per_layer"]) <= layer:
                    d["per_layer"].append(0.0)
                d["per_layer"][layer] = max(d["per_layer"][layer], r)
                d["per_figure"][fig] = max(d["per_figure"].get(fig, 0.0), r)
                if r > d["max"]:
                    d["max"], d["where"] = r, f"{name} {fig} layer {layer + 1}"
    missing = sorted(base.keys() ^ now.keys())
    if missing:
        raise RuntimeError(f"cells present on one side only: {missing}")
    return out


def recommend(spread: float, margin: float, dtype: str, rounding: str = "nearest") -> float:
    """``spread * margin`` as a power of ten: the nearest one (in log scale) or the next up.

    A spread of 0 counts as one unit roundoff of ``dtype``. "nearest" keeps the effective
    margin (rtol / spread) within a factor sqrt(10) of ``margin``; "up" makes it at least
    ``margin`` and at most ten times that.
    """
    eps = {"float64": 2.0**-53, "float32": 2.0**-24}[dtype]
    exponent = math.log10(max(spread, eps) * margin)
    rounded = math.ceil(exponent - 1e-12) if rounding == "up" else math.floor(exponent + 0.5)
    return float(10.0**rounded)


def gain_caught_at(rtol: float, layer: int = 1) -> float:
    """Smallest gain delta whose preact_var change at ``layer`` ((1+d)^(2*layer)-1) exceeds rtol.

    Exact for every init at layer 1 (bias 0, fixed input); at deeper layers only for
    homogeneous activations (relu).
    """
    return float((1.0 + rtol) ** (1.0 / (2 * layer)) - 1.0)


def fmt(x: float) -> str:
    return "0" if x == 0.0 else f"{x:.2e}"


def table(heads: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [heads, *rows]) for i in range(len(heads))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    head = "  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True))
    return "\n".join([head, "  ".join("-" * w for w in widths), *lines])


def plant_names(quick: bool) -> list[str]:
    deltas = GAIN_DELTAS_QUICK if quick else GAIN_DELTAS_FULL
    return ["none", "halve_kaiming", "bessel", *(f"gain={d:g}" for d in deltas)]


def drive(args: argparse.Namespace) -> int:
    """Run every variant and the plants, compare, print the tables, write the JSON."""
    import torch

    started = time.perf_counter()
    flags = cpu_flags()
    has_mkl = bool(torch.backends.mkl.is_available())  # type: ignore[no-untyped-call]
    todo, skipped = variants(args.quick, flags, has_mkl)
    baseline_doc = json.loads(Path(args.baseline).read_text())
    intel = baseline_doc["stability"]
    base_env = baseline_doc.get("environment", {})

    def one(v: Variant) -> tuple[Variant, dict[str, Any]]:
        t = time.perf_counter()
        doc = run_worker(args.python, v.env, v.args(), ["none"])
        print(f"  {v.name:<32} {time.perf_counter() - t:5.1f} s", file=sys.stderr, flush=True)
        return v, doc

    print(
        f"running {len(todo)} variants in fresh processes ({args.jobs} at a time)", file=sys.stderr
    )
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = list(pool.map(one, todo))
    ref_doc = done[0][1]
    figures = ref_doc["info"]["figures"]
    ref = ref_doc["runs"]["none"]

    results: list[dict[str, Any]] = []
    for v, doc in done:
        figs = doc["runs"]["none"]
        results.append(
            {
                "variant": v.name,
                "env": v.env,
                "threads": v.threads,
                "matmul_precision": v.matmul_precision,
                "mkldnn": v.mkldnn,
                "note": v.note,
                "info": doc["info"],
                "vs_reference": compare(figs, ref, figures),
                "vs_baseline": compare(figs, intel, figures),
            }
        )

    # Spread: the worst of every variant against both references.
    spread = {
        dt: max(max(r[k][dt]["max"] for k in ("vs_reference", "vs_baseline")) for r in results)
        for dt in DTYPES
    }
    per_layer = {
        k: {
            dt: [
                max(r[k][dt]["per_layer"][i] for r in results)
                for i in range(len(results[0][k][dt]["per_layer"]))
            ]
            for dt in DTYPES
        }
        for k in ("vs_reference", "vs_baseline")
    }
    # The same, over the variants that keep ATen's capability (only BLAS, CNR and threads move).
    ref_cap = ref_doc["info"]["cpu_capability"]
    same_aten = [r for r in results if r["info"]["cpu_capability"] == ref_cap]
    per_layer["same_aten"] = {
        dt: [
            max(
                r[k][dt]["per_layer"][i] for r in same_aten for k in ("vs_reference", "vs_baseline")
            )
            for i in range(len(per_layer["vs_reference"][dt]))
        ]
        for dt in DTYPES
    }
    spread_same_aten = {
        dt: max(r[k][dt]["max"] for r in same_aten for k in ("vs_reference", "vs_baseline"))
        for dt in DTYPES
    }
    rtol = {dt: recommend(spread[dt], args.margin, dt, args.rounding) for dt in DTYPES}

    # Plants: each against the same process's unplanted run.
    t = time.perf_counter()
    plants = plant_names(args.quick)
    pdoc = run_worker(args.python, {}, Variant("plants").args(), plants)
    print(
        f"  {'plants (' + str(len(plants)) + ')':<32} {time.perf_counter() - t:5.1f} s",
        file=sys.stderr,
    )
    clean = pdoc["runs"]["none"]
    plant_rows: list[dict[str, Any]] = []
    for plant in plants[1:]:
        cmp = compare(pdoc["runs"][plant], clean, figures)
        row: dict[str, Any] = {"plant": plant}
        for dt in DTYPES:
            # Only the cells the plant touches (halve_kaiming: the relu/kaiming ones).
            hit = [
                n
                for n in clean
                if clean[n]["dtype"] == dt
                and any(
                    rel_diff(pdoc["runs"][plant][n][f][i], clean[n][f][i]) > 0
                    for f in figures
                    for i in range(len(clean[n][f]))
                )
            ]
            changes_l1 = [
                rel_diff(pdoc["runs"][plant][n]["preact_var"][0], clean[n]["preact_var"][0])
                for n in hit
            ] or [0.0]
            # Per figure and layer: the smallest change over the touched cells.
            per_figure_layer_min = {
                f: [
                    min(rel_diff(pdoc["runs"][plant][n][f][i], clean[n][f][i]) for n in hit)
                    if hit
                    else 0.0
                    for i in range(len(next(iter(clean.values()))[f]))
                ]
                for f in figures
            }
            row[dt] = {
                "max": cmp[dt]["max"],
                "per_layer": cmp[dt]["per_layer"],
                "layer1_preact_min": min(changes_l1),
                "layer1_preact_max": max(changes_l1),
                "cells_changed": len(hit),
                "per_figure_layer_min": per_figure_layer_min,
                "caught": cmp[dt]["max"] > rtol[dt],
                "caught_by_every_layer1_preact": min(changes_l1) > rtol[dt],
            }
        plant_rows.append(row)

    doc = {
        "command": "python scripts/figure_spread.py"
        + (" --quick" if args.quick else "")
        + (f" --margin {args.margin:g}" if args.margin != 100 else "")
        + (f" --rounding {args.rounding}" if args.rounding != "nearest" else ""),
        "machine": {
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "avx512": all(f in flags for f in AVX512_FLAGS),
        },
        "baseline": {"path": str(args.baseline), "environment": base_env},
        "skipped": skipped,
        "figures": figures,
        "variants": results,
        "spread": spread,
        "spread_same_aten": spread_same_aten,
        "per_layer_max": per_layer,
        "margin": args.margin,
        "rounding": args.rounding,
        "effective_margin": {dt: rtol[dt] / spread[dt] if spread[dt] else None for dt in DTYPES},
        "recommended_rtol": rtol,
        "gain_delta_caught_at_layer1": {dt: gain_caught_at(rtol[dt]) for dt in DTYPES},
        "plants": plant_rows,
        "seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(report(doc))
    print(f"\nwrote {out} ({doc['seconds']:.0f} s)")
    return 0


def report(doc: dict[str, Any]) -> str:
    """The human-readable tables of a result document."""
    out: list[str] = []
    m = doc["machine"]
    b = doc["baseline"]["environment"]
    out.append(f"this machine: {m['cpu_model']} ({m['cpu_count']} cpus, avx512={m['avx512']})")
    out.append(f"baseline:     {b.get('cpu_model', '?')} (torch {b.get('torch', '?')})")
    out.append("max |a-b|/|b| over 12 cells x 3 figures x all layers, per dtype\n")
    rows = []
    for r in doc["variants"]:
        i = r["info"]
        rows.append(
            [
                r["variant"],
                i["cpu_capability"],
                i["mkl"]["cnr"],
                f"{i['threads']}/{i['mkl'].get('threads', '?')}",
                fmt(r["vs_reference"]["float64"]["max"]),
                fmt(r["vs_reference"]["float32"]["max"]),
                fmt(r["vs_baseline"]["float64"]["max"]),
                fmt(r["vs_baseline"]["float32"]["max"]),
            ]
        )
    heads = [
        "variant",
        "aten",
        "mkl cnr",
        "thr torch/mkl",
        "f64 vs ref",
        "f32 vs ref",
        "f64 vs base",
        "f32 vs base",
    ]
    out.append(table(heads, rows))
    out.append(
        "\nper layer index, max over variants and cells and figures: all variants against this"
        "\nmachine's reference (ref) and the baseline (base); 'same aten' = only the variants"
        "\nthat keep ATen's CPU capability (BLAS, CNR, threads), against both"
    )
    pl = doc["per_layer_max"]
    n = len(pl["vs_reference"]["float64"])
    keys = ("vs_reference", "vs_baseline", "same_aten")
    rows = [[str(i + 1)] + [fmt(pl[k][dt][i]) for k in keys for dt in DTYPES] for i in range(n)]
    heads = ["layer"] + [f"{dt[-2:]} {k}" for k in ("ref", "base", "same aten") for dt in DTYPES]
    out.append(table(heads, rows))
    out.append(f"\nskipped: {'; '.join(doc['skipped']) or 'none'}")
    out.append(f"mkl says: {doc['variants'][0]['info']['mkl']['header']}")
    how = "the nearest" if doc["rounding"] == "nearest" else "the next"
    out.append(f"\nrecommended rtol = max spread x {doc['margin']:g}, to {how} power of ten")
    for dt in DTYPES:
        caught = [p for p in doc["plants"] if p["plant"].startswith("gain=") and p[dt]["caught"]]
        smallest = min((float(p["plant"].split("=")[1]) for p in caught), default=math.nan)
        out.append(
            f"  {dt}: spread {fmt(doc['spread'][dt])}"
            f" (same aten {fmt(doc['spread_same_aten'][dt])})"
            f" -> rtol {doc['recommended_rtol'][dt]:.0e} (effective margin "
            f"{doc['effective_margin'][dt] or math.inf:.0f}); a gain 1+delta is caught at layer 1"
            f" from delta = {doc['gain_delta_caught_at_layer1'][dt]:.2e}, somewhere in the grid"
            f" from the planted delta = {smallest:g}"
        )
    out.append(
        "\nplanted changes against the same process unplanted, over the cells they change:"
        "\nL1 = smallest change of a layer-1 preact_var, max = largest change of any value,"
        "\ncaught = max > recommended rtol"
    )
    rows = []
    for p in doc["plants"]:
        row = [p["plant"]]
        for dt in DTYPES:
            c = p[dt]
            row += [
                str(c["cells_changed"]),
                fmt(c["layer1_preact_min"]),
                fmt(c["max"]),
                "yes" if c["caught"] else "NO",
            ]
        rows.append(row)
    heads = ["plant"] + [
        f"{dt[-2:]} {h}" for dt in DTYPES for h in ("cells", "L1", "max", "caught")
    ]
    out.append(table(heads, rows))
    return "\n".join(out)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="4 variants and 4 plants (a test run)")
    p.add_argument(
        "--margin",
        type=float,
        default=100.0,
        help="recommended rtol = max spread x MARGIN, as a power of ten (default 100)",
    )
    p.add_argument(
        "--rounding",
        choices=("nearest", "up"),
        default="nearest",
        help="to the nearest power of ten in log scale (default) or the next one up",
    )
    p.add_argument(
        "--baseline",
        default=str(DEFAULT_BASELINE),
        help="the committed baseline to compare with (default baselines/baseline.json)",
    )
    p.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        help="where to write the JSON (default results/figure_spread.json)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="variants run at a time (default 1: the CPUs are shared)",
    )
    p.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for the worker processes (default: this one)",
    )
    p.add_argument(
        "--report", metavar="JSON", help="only print the tables of an earlier result file"
    )
    # Worker-side flags (the driver passes them; not for direct use).
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--matmul-precision", default="highest", help=argparse.SUPPRESS)
    p.add_argument("--no-mkldnn", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--plants", default="none", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.worker_out:
        return worker(args)
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
