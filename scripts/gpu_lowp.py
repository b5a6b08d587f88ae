"""CUDA check of the fp8 emulation against the native path: ``torch._scaled_mm`` on an H100.

Run by ``scripts/gpu_checks.py`` (or alone: ``PYTHONPATH=$PWD python
scripts/gpu_lowp.py``). Each check returns ``(name, ok, line)``: E4M3 with per-tensor
scaling, the operands quantised by the emulation (``core.lowp``) and by a cast on the GPU
agree bit for bit, and the native scaled GEMM (fp32 output) agrees with the emulated one
(float64 from the dequantised operands) to the accumulation's precision; what differs is
exactly what the emulation does not model, the GEMM's accumulation.
"""

import sys

import torch

RTOL = 2e-3  # fp32 accumulation (in blocks) of K=1024 products, against float64


def checks(device: str = "cuda", rehearse: bool = False) -> list[tuple[str, bool, str]]:
    """fp8 on ``device`` against the emulation (small already: ``rehearse`` changes nothing)."""
    from stability.core.lowp.formats import get_format
    from stability.core.lowp.quantize import quantize
    from stability.core.lowp.recipes import get_recipe

    fmt, recipe = get_format("e4m3"), get_recipe("tensor")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(256, 1024, generator=g)
    b = torch.randn(512, 1024, generator=g) * 0.02
    qa, qb = quantize(a, fmt, recipe), quantize(b, fmt, recipe)
    sa, sb = float(2**qa.log2_scale), float(2**qb.log2_scale)
    a8 = (a.to(device) * sa).to(torch.float8_e4m3fn)
    b8 = (b.to(device) * sb).to(torch.float8_e4m3fn)
    same = torch.equal(a8.float().cpu(), qa.rounded) and torch.equal(b8.float().cpu(), qb.rounded)
    out: list[tuple[str, bool, str]] = [
        (f"lowp e4m3 cast {device} = emulation", same, f"operands bit-identical: {same}")
    ]
    inv_a = torch.tensor(1 / sa, device=device)
    inv_b = torch.tensor(1 / sb, device=device)
    native = torch._scaled_mm(a8, b8.t(), scale_a=inv_a, scale_b=inv_b, out_dtype=torch.float32)
    emulated = qa.values.double() @ qb.values.double().t()
    err = float((native.double().cpu() - emulated).norm() / emulated.norm())
    out.append((f"lowp e4m3 _scaled_mm {device} = emulation", err <= RTOL,
                f"relative deviation {err:.2g} (accumulation only), limit {RTOL}"))  # fmt: skip
    return out


if __name__ == "__main__":
    results = checks()
    for name, ok, line in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {line}")
    sys.exit(0 if all(ok for _, ok, _ in results) else 1)
