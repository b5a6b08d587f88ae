#!/usr/bin/env python
"""One finite-width network's mean eigenvalue of J J^T against free probability, over seeds.

For the report's spectrum cases (linear, relu, tanh at its isometric point; Gaussian and
orthogonal weights) at each width and depth: the measured log10(jj_mean / predicted) over
``--seeds`` networks (mean, its standard error, sd) beside ``core/jacobian_width``'s
predicted offset and sd, and, where an init of the registry has that scale, the sd that
``finite_width.predict_band`` implies (layer-1 gradient band of a depth L+1 network, less
the projection's own variance 2 (1 + s_L) / (n B)). Also the measured normalised variance
of J J^T's eigenvalues against free probability's.

    PYTHONPATH=$PWD python scripts/spectrum_width.py --seeds 32 --widths 64,128
"""

import argparse
import math

import torch

from stability.core import criticality as cr
from stability.core.best_init import best_init
from stability.core.config import MLPConfig
from stability.core.finite_width import predict_band
from stability.core.jacobian import factors
from stability.core.jacobian_theory import predicted_moments
from stability.core.jacobian_width import mean_band
from stability.core.model import input_batch
from stability.core.scaled import scaled_mlp

INITS = {("identity", "gaussian"): "lecun_normal", ("identity", "orthogonal"): "orthogonal",
         ("relu", "gaussian"): "kaiming_normal"}  # fmt: skip


def band_sd(act: str, law: str, depth: int, width: int, batch: int, s: float) -> float:
    """sd of log10 trace implied by predict_band, or NaN where no init has this scale."""
    init = INITS.get((act, law))
    if init is None:
        return math.nan
    band = predict_band(MLPConfig(depth=depth + 1, width=width, activation=act, init=init), batch)
    var = (band[0].grad_sd * math.log(10.0)) ** 2 - 2.0 * (1.0 + s) / (width * batch)
    return math.sqrt(max(var, 0.0)) / math.log(10.0)


def traces(
    model: torch.nn.Module, x: torch.Tensor, depths: list[int]
) -> dict[int, tuple[float, float]]:
    """Pooled mean and second moment of J J^T's eigenvalues at each depth (no SVD)."""
    f = factors(model, x)  # type: ignore[arg-type]
    out, jac = {}, None
    for d, (w, s) in enumerate(zip(f.weights, f.slopes, strict=True), start=1):
        jac = s[:, :, None] * (w.expand(s.shape[0], *w.shape) if jac is None else w @ jac)
        if d in depths:
            a = jac @ jac.transpose(1, 2)
            n = a.shape[1]
            out[d] = (float(a.diagonal(dim1=1, dim2=2).sum(1).mean()) / n,
                      float((a * a).sum((1, 2)).mean()) / n)  # fmt: skip
        if d >= max(depths):
            break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--widths", default="64,128")
    parser.add_argument("--depths", default="16,32,64")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--only", default="", help="comma list of activations")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    depths = [int(d) for d in args.depths.split(",")]
    torch.set_num_threads(1)
    tanh = best_init("tanh", max(depths), "orthogonal")
    points = [("identity", 1.0, 0.0), ("relu", 2.0, 0.0), ("tanh", tanh.sigma_w2, tanh.sigma_b2)]
    print(
        "case                 n    L  off(meas)    se   off(pred) sd(meas) sd(pred) sd(band)"
        "  normvar(meas)   (pred)"
    )
    for act, sw2, sb2 in points:
        if args.only and act not in args.only.split(","):
            continue
        q = float(cr.q_star(act, [sw2], [sb2])[0]) if act == "tanh" else sw2 + sb2
        second = (q - sb2) / sw2  # as in report/spectrum_cases.py
        for law in ("gaussian", "orthogonal"):
            pred = predicted_moments(act, sw2, sb2, max(depths), law, second)
            for n in widths:
                band = mean_band(act, sw2, sb2, max(depths), n, args.batch, law, second)
                off: dict[int, list[float]] = {d: [] for d in depths}
                nv: dict[int, list[float]] = {d: [] for d in depths}
                for seed in range(args.seeds):
                    model = scaled_mlp(act, max(depths), n, sw2, sb2, law, seed=seed)  # type: ignore[arg-type]
                    x = input_batch(model.config, args.batch) * math.sqrt(second)
                    for d, (m1, m2) in traces(model, x, depths).items():
                        off[d].append(math.log10(m1 / pred[d - 1].jj_mean))
                        nv[d].append((m2 - m1**2) / m1**2)
                for d in depths:
                    o, v = torch.tensor(off[d]), torch.tensor(nv[d])
                    p, b = pred[d - 1], band[d - 1]
                    bsd = band_sd(act, law, d, n, args.batch, p.normalised_var)
                    print(f"{act:8} {law:10} {n:4} {d:4} {float(o.mean()):+9.3f} "
                          f"{float(o.std()) / math.sqrt(args.seeds):6.3f} {b.log10_offset:+9.3f} "
                          f"{float(o.std()):8.3f} {b.log10_sd:8.3f} {bsd:8.3f} "
                          f"{float(v.mean()):8.2f}+-{float(v.std()) / math.sqrt(args.seeds):5.2f} "
                          f"{p.normalised_var:8.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
