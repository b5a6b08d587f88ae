"""CUDA checks of the user-model paths on a real architecture (tiny GPT-2, built in code).

Run by ``scripts/gpu_checks.py`` (or alone: ``PYTHONPATH=$PWD python scripts/gpu_usermodel.py``)
on a machine with a CUDA build of torch and ``transformers``. Each check returns
``(ok, line)``:

- float32 on CUDA gives the CPU's verdict and figures (relative 1e-3: GEMMs differ);
- native float16 and bfloat16 (``model.half()``, ``model.bfloat16()``): every figure finite
  where the float32 probe found float16 headroom everywhere, and the verdict stable;
- autocast (``torch.autocast("cuda", torch.float16)``): finite, the verdict stable;
- the float32 probe's float16 prediction holds natively: a module whose float32 output
  has headroom >= 1 binade does not overflow in native float16;
- the CLI: ``stability probe --device cuda`` and ``stability doctor --device cuda --dtype
  float16`` on the HF batch exit 0.
"""

import math
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # ``examples`` (the tiny HF models), however this is started

RTOL = 1e-3
FIGURES = ("fwd_var", "fwd_max_abs", "bwd_var")


def _rows(device: str, dtype: torch.dtype | None = None,
          autocast: torch.dtype | None = None) -> list[dict[str, Any]]:  # fmt: skip
    from examples import hf_tiny
    from stability.core.outputs import main_tensor
    from stability.core.probe import projection_loss
    from stability.usermodel.findings import judge
    from stability.usermodel.probe import probe_modules

    model = hf_tiny.build("gpt2").eval().to(device)
    if dtype is not None:
        model = model.to(dtype)
    batch = {k: v.to(device) for k, v in hf_tiny.gpt2_batch().items() if k != "labels"}
    kind = torch.device(device).type
    ctx: Callable[[], AbstractContextManager[Any]] = (
        (lambda: torch.autocast(kind, dtype=autocast)) if autocast else nullcontext
    )

    def forward() -> torch.Tensor:
        with ctx():
            out = main_tensor(model(**batch))
        assert out is not None
        return out

    return judge(probe_modules(model, forward, lambda out: projection_loss(out.float())))


def _finite(rows: list[dict[str, Any]]) -> bool:
    return all(r["fwd_nonfinite"] == 0 and r["bwd_nonfinite"] == 0 for r in rows)


def checks(device: str, rehearse: bool = False) -> list[tuple[str, bool, str]]:
    """Every check on ``device`` (the sizes are already small: ``rehearse`` changes nothing)."""
    out: list[tuple[str, bool, str]] = []
    cpu = {r["module"]: r for r in _rows("cpu")}
    gpu = {r["module"]: r for r in _rows(device)}
    worst = max(
        abs(gpu[m][k] - cpu[m][k]) / max(abs(cpu[m][k]), 1e-30)
        for m in cpu for k in FIGURES if math.isfinite(cpu[m][k])
    )  # fmt: skip
    same = {m: (cpu[m]["verdict"], gpu[m]["verdict"]) for m in cpu}
    agree = all(a == b for a, b in same.values())
    out.append(("hf gpt2 float32 cuda = cpu", worst <= RTOL and agree,
                f"worst relative deviation {worst:.2g}, verdicts agree: {agree}"))  # fmt: skip
    roomy = [m for m, r in cpu.items() if r["fwd_f16_headroom"] >= 1]
    for name, kw in (("float16", {"dtype": torch.float16}),
                     ("bfloat16", {"dtype": torch.bfloat16}),
                     ("autocast float16", {"autocast": torch.float16})):  # fmt: skip
        rows = {r["module"]: r for r in _rows(device, **kw)}
        finite = _finite(list(rows.values()))
        kept = all(rows[m]["fwd_nonfinite"] == 0 for m in roomy if m in rows)
        verdicts = sorted({r["verdict"] for r in rows.values()})
        line = f"finite: {finite}; float32's headroom held: {kept}; verdicts {verdicts}"
        out.append((f"hf gpt2 native {name}", finite and kept, line))
    common = ["--model", "examples.hf_tiny:build", "--model-args", '{"arch": "gpt2"}',
              "--input", "examples.hf_tiny:gpt2_batch", "--device", device]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:  # only the exit codes are checked
        files = ["--db", f"{tmp}/s.db", "--out"]
        for name, cmd in (
            ("probe", ["probe", *common, *files, f"{tmp}/probe.csv"]),
            ("doctor float16", ["doctor", *common, "--dtype", "float16", "--steps", "5",
                                *files, f"{tmp}/doctor.csv"]),
        ):  # fmt: skip
            code = subprocess.call([sys.executable, "-m", "stability.cli", *cmd], cwd=ROOT)
            out.append((f"hf gpt2 cli {name} --device {device}", code == 0, f"exit {code}"))
    return out


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_usermodel: no CUDA device visible to torch", file=sys.stderr)
        return 2
    results = checks("cuda")
    for name, ok, line in results:
        print(f"{name}: {'ok' if ok else 'FAILED'} ({line})")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
