"""Coordinate checks on CUDA, widths to 4096: ``(name, ok, line)`` tuples for the GPU run.

    python scripts/gpu_coord.py          # prints one line per check, exit 1 if any failed

``checks()`` is what scripts/gpu_checks.py calls (as it calls scripts/gpu_usermodel.py):
muP on the built-in MLP and on examples/transformer_scaling.py stays width-stable from 256
to 4096, SP's readout drifts as width^1 at the same sizes, and the default-size check's wall
time on the device. Without CUDA every check reports "skipped" and passes nothing; rehearsed
(``checks("cpu", rehearse=True)``, as ``gpu_checks.py --rehearse`` does) the same checks run
at widths 32-128 on the given device, to show they run, not what they find.
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

REHEARSAL_WIDTHS = (32, 64, 128)
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


def checks(device: str = "cuda", rehearse: bool = False) -> list[Check]:
    """Every coordinate check on ``device``, or one 'skipped' line where CUDA is asked for
    and absent; ``rehearse``: at ``REHEARSAL_WIDTHS`` and one seed."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        return [("coord-check cuda", True, "skipped: CUDA is not available")]

    def sized(spec: CoordSpec) -> CoordSpec:
        spec = replace(spec, device=device)
        return replace(spec, widths=REHEARSAL_WIDTHS, seeds=1) if rehearse else spec

    mlp, transformer = sized(MLP), sized(TRANSFORMER)
    default = sized(replace(CoordSpec(), threads=0))
    out = [
        _stable(f"coord-check mup mlp {device}", mlp),
        _stable(f"coord-check mup transformer {device}", transformer),
        _sp_drifts(f"coord-check sp mlp {device}", replace(mlp, param="sp"), "readout"),
        _sp_drifts(
            f"coord-check sp transformer {device}", replace(transformer, param="sp"), "head"
        ),
    ]
    start = time.perf_counter()
    run_check(default)
    took = time.perf_counter() - start
    out.append((f"coord-check default cost {device}", took < 120.0, f"default check {took:.1f} s"))
    return out


def main() -> int:
    results = checks()
    for name, ok, line in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {line}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
