"""Coordinate checks on CUDA, widths to 4096: ``(name, ok, line)`` tuples for the GPU run.

    python scripts/gpu_coord.py          # prints one line per check, exit 1 if any failed

``checks()`` is what scripts/gpu_checks.py calls (as it calls scripts/gpu_usermodel.py):
muP on the built-in MLP and on examples/transformer_scaling.py stays width-stable from 256
to 4096, SP's readout drifts as width^1 at the same sizes, and the default-size check's wall
time on the device. Without CUDA every check reports "skipped" and passes nothing.
"""

import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stability.scaling.fit import drifting
from stability.scaling.run import CoordSpec, run_check

WIDE = (256, 512, 1024, 2048, 4096)
MLP = CoordSpec(widths=WIDE, seeds=3, steps=(1, 2, 3), param="mup", device="cuda", threads=0)
TRANSFORMER = replace(MLP, model="examples.transformer_scaling:build",
                      input="examples.transformer_scaling:make_batch", loss="cross_entropy",
                      widths=(128, 256, 512, 1024, 2048))  # fmt: skip

Check = tuple[str, bool, str]


def _stable(name: str, spec: CoordSpec) -> Check:
    start = time.perf_counter()
    result = run_check(spec)
    drifts = list(drifting(result["verdicts"]))
    took = time.perf_counter() - start
    n = len(result["verdicts"])
    if drifts:
        return name, False, f"{len(drifts)} of {n} drift ({took:.1f} s): {drifts[0]}"
    return name, n > 0, f"{n} modules width-stable to width {max(spec.widths)} ({took:.1f} s)"


def _sp_drifts(name: str, spec: CoordSpec, module: str) -> Check:
    fits = run_check(spec)["fits"]
    row = fits[(fits["module"] == module) & (fits["figure"] == "dwx_rms") & (fits["step"] == 1)]
    if row.empty:
        return name, False, f"no fit for {module}"
    r = row.iloc[0]
    ok = bool(r["slope"] - r["tol"] > 0 and abs(r["slope"] - 1.0) <= r["tol"])
    return name, ok, f"{module} dW x after 1 step: width^{r['slope']:.2f} +- {r['tol']:.2f} " \
        "(theory width^1)"  # fmt: skip


def checks() -> list[Check]:
    """Every CUDA coordinate check, or one 'skipped' line without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return [("coord-check cuda", True, "skipped: CUDA is not available")]
    out = [
        _stable("coord-check mup mlp cuda", MLP),
        _stable("coord-check mup transformer cuda", TRANSFORMER),
        _sp_drifts("coord-check sp mlp cuda", replace(MLP, param="sp"), "readout"),
        _sp_drifts("coord-check sp transformer cuda", replace(TRANSFORMER, param="sp"), "head"),
    ]
    start = time.perf_counter()
    run_check(replace(CoordSpec(), device="cuda", threads=0))
    took = time.perf_counter() - start
    out.append(("coord-check default cost cuda", took < 120.0, f"default check {took:.1f} s"))
    return out


def main() -> int:
    results = checks()
    for name, ok, line in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {line}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
