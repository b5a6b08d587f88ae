#!/usr/bin/env python
"""Every CUDA check in one go: ``cuda`` properties, CUDA benchmarks, a sweep, the AMP doctor.

Run it where a GPU is, from the repository root, with the project installed against a
CUDA build of torch:

    python scripts/gpu_checks.py            # full CUDA grid (float32, float16, bfloat16)
    python scripts/gpu_checks.py --quick    # small shape only
    python scripts/gpu_checks.py --table results/gpu_bench.json   # re-print a table
    python scripts/gpu_checks.py --rehearse --results /tmp/r   # every path on CPU, small

Writes ``results/gpu_bench.json`` (pytest-benchmark), stores it in the results database,
and prints one table: throughput, efficiency against the same-run GEMM, spread. Exit
codes: 0 all passed, 1 a check failed, 2 no CUDA device (nothing was run).

**The rehearsal** (``--rehearse``) runs the same plan on the CPU at small sizes, before a
GPU is ever lent (a lent GPU comes with 15 minutes): every command, every check function
and every script's ``checks``, with the device and the sizes swapped and nothing else. The
verdicts of a rehearsal are printed, not judged (speed goals and width scaling mean nothing
at width 32 on a CPU); it exits 1 if a command exits non-zero or a check raises: the bugs
that would otherwise cost the GPU run (``tests/test_gpu_rehearsal.py`` runs it).

The vectorised sweep on CUDA (issue 16): the same grid run per cell and as stacks, in this
process, timed with a device sync; the stacked path must be at least ``VECTORISED_GOAL``
times faster, and its rows must agree with the per-cell rows (cuBLAS may pick another
kernel for a batched product, so agreement is to ``CUDA_ROWS_RTOL``, not to the bit, and
is judged on the non-chaotic cells only).

The Jacobian spectrum on CUDA (issue 17): ``stability.core.jacobian.spectrum`` with
``device='cuda'`` against the same call on CPU, exact (width 64) and Lanczos (width 256),
float64 throughout: every moment and quantile must agree to ``SPECTRUM_RTOL``.
"""

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # ``examples`` (the tiny HF models), as the tests import it
SCRIPTS = ("gpu_usermodel", "gpu_lowp", "gpu_coord", "gpu_sweep_speed")  # each has checks()
VECTORISED_GOAL = 20.0  # stacked over per-cell, on CUDA
CUDA_ROWS_RTOL = 1e-2  # variances, stacked against per-cell (float32; 5x that for 16 bits)
ROW_COLUMNS = ("preact_var", "act_var", "grad_var", "weight_grad_var")
SPECTRUM_RTOL = 1e-8  # float64 on both devices: only the order of summation differs


def cuda_device() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"


def run(cmd: list[str]) -> int:
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    code = subprocess.run(cmd, check=False, cwd=ROOT).returncode
    print(f"  exit {code} after {time.perf_counter() - start:.1f} s", flush=True)
    return code


def table(path: Path) -> str:
    """One line per benchmark: what ran, samples/s, GFLOP/s, efficiency, relative IQR."""
    data = json.loads(path.read_text())
    head = (
        f"{'kind':8} {'device':6} {'dtype':9} {'mode':8} {'shape':9} {'batch':>6} "
        f"{'samples/s':>12} {'GFLOP/s':>9} {'GEMM':>9} {'eff':>6} {'rIQR':>6} {'nonfin':>6}"
    )
    lines = [head, "-" * len(head)]
    rows = [b.get("extra_info", {}) for b in data.get("benchmarks", [])]
    rows = [r for r in rows if "samples_per_s" in r and "kind" in r]
    rows.sort(key=lambda r: (r["kind"], r["device"], r["dtype"], r["depth"], r["batch_size"]))
    for r in rows:
        shape = f"{r['depth']}x{r['width']}"
        lines.append(
            f"{r['kind']:8} {r['device']:6} {r['dtype']:9} {r['precision_mode']:8} {shape:9} "
            f"{r['batch_size']:>6} {r['samples_per_s']:>12.1f} {r['gflops']:>9.1f} "
            f"{r['calib_gflops']:>9.1f} {r['efficiency']:>6.2f} {r['rel_iqr']:>6.3f} "
            f"{r['nonfinite_losses']:>6}"
        )
    return "\n".join(lines)


def vectorised_check(device: str, quick: bool, rehearse: bool = False) -> tuple[bool, str]:
    """Time one grid per cell and stacked on ``device``; compare their rows. (ok, summary)"""
    from stability.measure.timer import synchronize
    from stability.sweep.cells import SweepGrid
    from stability.sweep.executors import InProcessExecutor
    from stability.sweep.stacks import default_budget
    from stability.sweep.vectorised import VectorisedExecutor

    grid = SweepGrid(
        activations=("relu", "tanh") if quick else ("relu", "tanh", "scaled_logistic", "selu"),
        inits=("kaiming_normal", "xavier_normal", "lecun_normal", "orthogonal"),
        depths=(6,) if rehearse else (20,) if quick else (50,),
        widths=(32,) if rehearse else (256,),
        dtypes=("float32", "float16", "bfloat16"),
        seeds=(0, 1) if quick or rehearse else (0, 1, 2, 3),
        batches=(16,) if rehearse else (256,),
        device=device,
    )
    cells = grid.cells()
    per_cell, stacked = InProcessExecutor(), VectorisedExecutor(1, default_budget(device))

    def timed(executor: object) -> tuple[float, dict[str, list[dict[str, object]]]]:
        synchronize(device)
        start = time.perf_counter()
        landed = list(executor.run(cells))  # type: ignore[attr-defined]
        synchronize(device)
        seconds = time.perf_counter() - start
        failed = [c.key for c, o in landed if isinstance(o, BaseException)]
        if failed:
            raise RuntimeError(f"{len(failed)} cells failed, first {failed[0]}")
        return seconds, {c.key: o[0] for c, o in landed}

    timed(VectorisedExecutor(1, default_budget(device)))  # warm-up: kernels, allocator, theory
    t_stacked, rows_stacked = timed(stacked)
    t_cell, rows_cell = timed(per_cell)
    worst: dict[str, float] = {}
    for cell in cells:
        if cell.config.init == "orthogonal" and cell.config.activation == "tanh":
            continue  # the chaotic edge: kernels that differ in the last bit drift apart
        for a, b in zip(rows_stacked[cell.key], rows_cell[cell.key], strict=True):
            for col in ROW_COLUMNS:
                va, vb = float(a[col]), float(b[col])  # type: ignore[arg-type]
                if vb != 0 and vb == vb and va == va:
                    dev = abs(va - vb) / abs(vb)
                    worst[cell.config.dtype] = max(worst.get(cell.config.dtype, 0.0), dev)
    speedup = t_cell / t_stacked
    rows_ok = all(
        v <= CUDA_ROWS_RTOL * (1 if dtype == "float32" else 5) for dtype, v in worst.items()
    )
    summary = (
        f"vectorised on {device}: {len(cells)} cells, per cell {t_cell:.2f} s, stacked "
        f"{t_stacked:.2f} s, speedup {speedup:.1f}x (goal >= {VECTORISED_GOAL:g}x); worst "
        f"relative row deviation {', '.join(f'{k} {v:.2g}' for k, v in sorted(worst.items()))}"
    )
    return speedup >= VECTORISED_GOAL and rows_ok, summary


def spectrum_check(device: str, rehearse: bool = False) -> tuple[bool, str]:
    """The Jacobian's spectrum on ``device`` against CPU, exact and Lanczos. (ok, summary)"""
    from stability.core.jacobian import spectrum
    from stability.core.model import input_batch
    from stability.core.scaled import scaled_mlp

    worst = 0.0
    for method, width in (
        (("exact", 16), ("lanczos", 64))
        if rehearse
        else (
            ("exact", 64),
            ("lanczos", 256),
        )
    ):
        model = scaled_mlp("tanh", 16, width, 1.2, 0.05, "gaussian", seed=3)
        x = input_batch(model.config, 8)
        cpu = spectrum(model, x, [4, 16], method)  # type: ignore[arg-type]
        gpu = spectrum(model, x, [4, 16], method, device=device)  # type: ignore[arg-type]
        for a, b in zip(cpu, gpu, strict=True):
            for col in ("jj_mean", "jj_var", "within_10", "q05", "q50", "q95"):
                va, vb = float(getattr(a, col)), float(getattr(b, col))
                worst = max(worst, abs(va - vb) / max(abs(va), 1e-12))
    summary = f"spectrum on {device} against CPU: worst relative deviation {worst:.2g}"
    return worst <= SPECTRUM_RTOL, summary


def _script_checks(device: str, rehearse: bool) -> dict[str, int]:
    """The checks of the scripts beside this one (``SCRIPTS``), each a list of ``(name, ok,
    line)``: the user-model paths on an HF model, fp8 against ``torch._scaled_mm``, the
    coordinate check's width sweep, stacked against per-cell; a script that does not import
    or raises is one failure. Rehearsed, a check that ran counts as run, whatever its ok."""
    import importlib

    codes: dict[str, int] = {}
    for script in SCRIPTS:
        start = time.perf_counter()
        try:
            module = importlib.import_module(script)
            for name, ok, line in module.checks(device, rehearse=rehearse):
                print(f"{name}: {line}", flush=True)
                codes[name] = 0 if ok or rehearse else 1
        except Exception as exc:  # reported as a failed check, the others still count
            print(f"{script} raised {type(exc).__name__}: {exc}", flush=True)
            codes[script] = 1
        print(f"  {script}: {time.perf_counter() - start:.1f} s", flush=True)
    return codes


def plan(device: str, quick: bool, rehearse: bool, results: Path) -> dict[str, list[str]]:
    """The commands of the run, by check name. Rehearsed: the same commands on ``device``
    (the CPU) at small sizes; the CUDA benchmarks, which exist only where CUDA does, become
    two CPU benchmarks, so the JSON, its table and its ingest still run."""
    py = sys.executable
    cli = [py, "-m", "stability.cli"]
    db = ["--db", str(results / "stability.db")]
    bench = ["benchmarks", "-m", "cuda", *(["--quick"] if quick else [])]
    if rehearse:  # the CUDA cases exist only where CUDA does: two CPU ones instead
        bench = ["benchmarks/test_train_throughput.py", "benchmarks/test_inference_throughput.py",
                 "--quick", "--smoke", "-k", "b16"]  # fmt: skip
    small = rehearse or quick
    return {
        # pytest exits 5 when it selects nothing: a CUDA check that vanished is a failure.
        "cuda properties": [py, "-m", "pytest", "properties", "-m", "cuda", "-q",
                            "--hypothesis-profile=ci", "-p", "no:cacheprovider"],
        "cuda benchmarks": [py, "-m", "pytest", *bench, "-q", "-p", "no:cacheprovider",
                            f"--benchmark-json={results / 'gpu_bench.json'}"],
        # The core on CUDA: native float16/bfloat16 rows beside float32 (precision_mode native).
        "cuda sweep": [*cli, "sweep", "--device", device, "--activation", "relu,tanh",
                       "--init", "kaiming_normal,xavier_normal",
                       "--dtype", "float32,float16,bfloat16", "--depth", "6" if rehearse else "20",
                       "--width", "32" if rehearse else "256", "--seeds", "0", "--quiet",
                       *db, "--out", str(results / "gpu_sweep.csv")],
        # Mixed precision with torch.amp.GradScaler: sigmoid's gradients underflow unscaled.
        "cuda doctor (AMP)": [*cli, "doctor", "--device", device, "--activation", "sigmoid",
                              "--init", "xavier_normal", "--depth", "6" if small else "12",
                              "--dtype", "float16", "--loss-scaling",
                              "--steps", "5" if rehearse else "20",
                              *db, "--out", str(results / "gpu_doctor.csv")],
    }  # fmt: skip


def _guarded(name: str, check: Callable[[], tuple[bool, str]], rehearse: bool) -> int:
    """One check function's exit code (1 where it raised), its summary printed."""
    start = time.perf_counter()
    try:
        ok, summary = check()
    except Exception as exc:  # reported as a failed check, the others still count
        ok, summary, rehearse = False, f"{name} raised {type(exc).__name__}: {exc}", False
    print(f"{summary} ({time.perf_counter() - start:.1f} s)", flush=True)
    return 0 if ok or rehearse else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shape only")
    parser.add_argument("--table", type=Path, help="only print the table of this JSON")
    parser.add_argument(
        "--rehearse", action="store_true", help="every path on the CPU at small sizes, unjudged"
    )
    parser.add_argument("--results", type=Path, default=ROOT / "results", help="output folder")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return 0
    device = "cpu" if args.rehearse else cuda_device()
    if device is None:
        print(
            "gpu_checks: no CUDA device is visible to torch (torch.cuda.is_available() is "
            "False); run this on a GPU machine with a CUDA build of torch, e.g. "
            "STABILITY_TORCH='torch --index-url https://download.pytorch.org/whl/cu126', "
            "or rehearse it on the CPU with --rehearse",
            file=sys.stderr,
        )
        return 2
    where = "cpu" if args.rehearse else "cuda"
    print(f"device: {device}" + (" (rehearsal: verdicts not judged)" if args.rehearse else ""))
    results: Path = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    (results / "gpu_bench.json").unlink(missing_ok=True)  # never ingest an earlier run's
    rehearse = bool(args.rehearse)
    commands = plan(where, args.quick, rehearse, results)
    codes = {name: run(cmd) for name, cmd in commands.items()}
    codes["cuda vectorised sweep (>= 20x per cell)"] = _guarded(
        "vectorised check", lambda: vectorised_check(where, args.quick, rehearse), rehearse
    )
    codes["cuda Jacobian spectrum (= CPU)"] = _guarded(
        "spectrum check", lambda: spectrum_check(where, rehearse), rehearse
    )
    codes.update(_script_checks(where, rehearse))
    bench_json = results / "gpu_bench.json"
    if bench_json.exists():
        db = ["--db", str(results / "stability.db")]
        codes["ingest"] = run([sys.executable, "-m", "stability.cli", "bench-ingest", *db,
                               str(bench_json)])  # fmt: skip
        print(table(bench_json))
    for name, code in codes.items():
        print(f"{name}: {'ok' if code == 0 else f'FAILED (exit {code})'}")
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
