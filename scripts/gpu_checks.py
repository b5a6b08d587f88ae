#!/usr/bin/env python
"""Every CUDA check in one go: ``cuda`` properties, CUDA benchmarks, a sweep, the AMP doctor.

Run it where a GPU is, from the repository root, with the project installed against a
CUDA build of torch:

    python scripts/gpu_checks.py            # full CUDA grid (float32, float16, bfloat16)
    python scripts/gpu_checks.py --quick    # small shape only
    python scripts/gpu_checks.py --table results/gpu_bench.json   # re-print a table

Writes ``results/gpu_bench.json`` (pytest-benchmark), stores it in the results database,
and prints one table: throughput, efficiency against the same-run GEMM, spread. Exit
codes: 0 all passed, 1 a check failed, 2 no CUDA device (nothing was run).
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

JSON = Path("results") / "gpu_bench.json"


def cuda_device() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"


def run(cmd: list[str]) -> int:
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=False).returncode


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shape only")
    parser.add_argument("--table", type=Path, help="only print the table of this JSON")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return 0
    device = cuda_device()
    if device is None:
        print(
            "gpu_checks: no CUDA device is visible to torch (torch.cuda.is_available() is "
            "False); run this on a GPU machine with a CUDA build of torch, e.g. "
            "STABILITY_TORCH='torch --index-url https://download.pytorch.org/whl/cu126'",
            file=sys.stderr,
        )
        return 2
    print(f"device: {device}", flush=True)
    JSON.parent.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    codes = {
        "cuda properties": run(
            [py, "-m", "pytest", "properties", "-m", "cuda", "-q", "--hypothesis-profile=ci"]
        ),
        "cuda benchmarks": run(
            [py, "-m", "pytest", "benchmarks", "-m", "cuda", "-q", f"--benchmark-json={JSON}"]
            + (["--quick"] if args.quick else [])
        ),
        # The core on CUDA: native float16/bfloat16 rows beside float32 (precision_mode native).
        "cuda sweep": run(
            [
                py,
                "-m",
                "stability.cli",
                "sweep",
                "--device",
                "cuda",
                "--activation",
                "relu,tanh",
                "--init",
                "kaiming_normal,xavier_normal",
                "--dtype",
                "float32,float16,bfloat16",
                "--depth",
                "20",
                "--width",
                "256",
                "--seeds",
                "0",
                "--quiet",
                "--out",
                "results/gpu_sweep.csv",
            ]
        ),
        # Mixed precision with torch.amp.GradScaler: sigmoid's gradients underflow unscaled.
        "cuda doctor (AMP)": run(
            [
                py,
                "-m",
                "stability.cli",
                "doctor",
                "--device",
                "cuda",
                "--activation",
                "sigmoid",
                "--init",
                "xavier_normal",
                "--depth",
                "12",
                "--dtype",
                "float16",
                "--loss-scaling",
                "--steps",
                "20",
                "--out",
                "results/gpu_doctor.csv",
            ]
        ),
    }
    if JSON.exists():
        codes["ingest"] = run([py, "-m", "stability.cli", "bench-ingest", str(JSON)])
        print(table(JSON))
    for name, code in codes.items():
        print(f"{name}: {'ok' if code == 0 else f'FAILED (exit {code})'}")
    # pytest exits 5 when it selects nothing: a CUDA check that silently vanished is a failure.
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
