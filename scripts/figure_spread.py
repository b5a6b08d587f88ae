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
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The script's own folder is on sys.path when run as ``python scripts/figure_spread.py``.
from spread_report import DTYPES, compare, gain_caught_at, recommend, rel_diff, report
from spread_worker import CONTROLLED_ENV, worker

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = ROOT / "baselines" / "baseline.json"
DEFAULT_OUT = ROOT / "results" / "figure_spread.json"
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
