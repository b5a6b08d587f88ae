"""Singular values of the input-output Jacobian of the project's MLP, per depth.

For block ``l``, ``h_l = W_l a_{l-1} + b_l`` and ``a_l = phi(h_l)``, so the Jacobian of the
layer-``l`` output with respect to the input is ``J_l = D_l W_l ... D_1 W_1`` with
``D_l = diag(phi'(h_l))``. Two ways to its spectrum, for a whole batch at once:

- ``exact``: the explicit product (batch x n x n) and ``torch.linalg.svdvals`` at the asked
  depths; every depth comes out of one pass, at ``batch * depth * n^3`` flops: moderate n.
- ``lanczos``: stochastic Lanczos quadrature (Golub & Meurant; Ubaru, Chen & Saad 2017) on
  ``J J^T``: ``steps`` products ``J (J^T v)``, each a linear pass down and up the stored
  ``W_l`` and ``D_l`` (batch x n x n flops per layer), full reorthogonalisation. The Ritz
  values with weights ``tau_j^2`` (first components of the tridiagonal's eigenvectors) are a
  quadrature of the spectral measure from one random start per input: the mean and second
  moment are unbiased, the extremes are Ritz bounds (the condition number from them is a
  lower bound on the true one).

The spectrum is of the exact map in float64 (``dtype``), on ``device`` (CPU or CUDA; every
tensor read back to the host goes through ``.cpu()`` or ``float()``): emulated
rounding of reduced-precision cells is left out, it is the weights' and slopes' spectrum.
"""

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from stability.core.model import MLP

Method = Literal["auto", "exact", "lanczos"]
METHODS = ("auto", "exact", "lanczos")
EXACT_MAX_WIDTH = 128  # auto: exact up to this width, Lanczos beyond
LANCZOS_STEPS = 24
LANCZOS_SEED = 4_242
WITHIN = 10.0  # "well conditioned" singular values: within a factor 10 of 1
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class Factors:
    """What the Jacobian is made of at a batch: ``W_l`` (n_out, n_in), ``D_l`` (batch, n)."""

    weights: list[torch.Tensor]
    slopes: list[torch.Tensor]


def factors(
    model: MLP,
    x: torch.Tensor,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> Factors:
    """One forward pass storing each block's weight and activation slope at ``x``, on
    ``device`` (default: where ``x`` is); the model itself is not moved."""
    target = torch.device(device) if device is not None else x.device
    weights, slopes = [], []
    a = x.detach().to(device=target, dtype=dtype)
    for block in model.layers:
        w = block.linear.weight.detach().to(device=target, dtype=dtype)
        h = a @ w.T
        if block.linear.bias is not None:
            h = h + block.linear.bias.detach().to(device=target, dtype=dtype)
        pre = h.requires_grad_(True)
        activation = _on(block.activation, target)
        with torch.enable_grad():
            out = activation(pre)
            (slope,) = torch.autograd.grad(out.sum(), pre)
        weights.append(w)
        slopes.append(slope.detach())
        a = out.detach()
    return Factors(weights, slopes)


def _on(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The activation on ``device``: a copy only if it holds tensors (a stateless one, the
    usual case, runs anywhere), so the caller's model stays where it is."""
    held = [*module.parameters(), *module.buffers()]
    if all(t.device == device for t in held):
        return module
    return copy.deepcopy(module).to(device)


def exact_singular_values(f: Factors, depths: list[int]) -> dict[int, torch.Tensor]:
    """Singular values (batch, n) of ``J_l`` at each depth in ``depths``, from the product."""
    out: dict[int, torch.Tensor] = {}
    jac: torch.Tensor | None = None
    for depth, (w, d) in enumerate(zip(f.weights, f.slopes, strict=True), start=1):
        jac = d[:, :, None] * (w.expand(d.shape[0], *w.shape) if jac is None else w @ jac)
        if depth in depths:
            out[depth] = torch.linalg.svdvals(jac)
        if depth >= max(depths):
            break
    return out


def _jjt(f: Factors, depth: int, v: torch.Tensor) -> torch.Tensor:
    """``J_depth J_depth^T v`` for a batch of vectors v (batch, n)."""
    u = v
    for w, d in zip(reversed(f.weights[:depth]), reversed(f.slopes[:depth]), strict=True):
        u = (d * u) @ w  # J^T: W_l^T D_l, from the top down
    for w, d in zip(f.weights[:depth], f.slopes[:depth], strict=True):
        u = d * (u @ w.T)  # J: D_l W_l, from the bottom up
    return u


def lanczos(
    f: Factors, depth: int, steps: int = LANCZOS_STEPS, seed: int = LANCZOS_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ritz values (batch, k) of ``J J^T`` and their quadrature weights (sum 1 per input)."""
    ref = f.slopes[0]
    batch, n = ref.shape
    k = min(steps, n)
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(batch, n, generator=gen, dtype=torch.float64).to(ref)
    v = v / v.norm(dim=1, keepdim=True)
    basis = [v]
    alpha = torch.zeros(batch, k, dtype=ref.dtype, device=ref.device)
    beta = torch.zeros(batch, k, dtype=ref.dtype, device=ref.device)
    for j in range(k):
        w = _jjt(f, depth, basis[j])
        alpha[:, j] = (w * basis[j]).sum(dim=1)
        stacked = torch.stack(basis, dim=1)  # (batch, j+1, n)
        for _ in range(2):  # full reorthogonalisation, twice is enough (Parlett's rule)
            w = w - torch.einsum("bj,bjn->bn", torch.einsum("bjn,bn->bj", stacked, w), stacked)
        if j + 1 == k:
            break
        norm = w.norm(dim=1)
        scale = alpha[:, : j + 1].abs().amax(dim=1).clamp(min=1e-300)
        beta[:, j] = norm
        # An exhausted Krylov space (norm ~ 0): a zero vector keeps T block-diagonal, and
        # a block that the start vector never touched gets quadrature weight 0.
        alive = (norm > 1e-12 * scale)[:, None]
        basis.append(torch.where(alive, w / norm.clamp(min=1e-300)[:, None], torch.zeros_like(w)))
    tri = torch.diag_embed(alpha) + torch.diag_embed(beta[:, : k - 1], 1)
    tri = tri + torch.diag_embed(beta[:, : k - 1], -1)
    theta, vecs = torch.linalg.eigh(tri)
    return theta.clamp(min=0.0), vecs[:, 0, :] ** 2


@dataclass(frozen=True)
class SpectrumRow:
    """The Jacobian's spectrum at one depth, pooled over the batch.

    ``jj_mean`` and ``jj_var`` are the mean and variance of the eigenvalues of ``J J^T``
    (squared singular values) pooled over inputs: what free probability predicts.
    ``log10_condition`` is the median over inputs of log10(s_max / s_min) (inf for a
    singular J); ``within_10`` the fraction of singular values in [1/10, 10].
    """

    depth: int
    method: str
    batch: int
    width: int
    jj_mean: float
    jj_var: float
    log10_condition: float
    within_10: float
    q05: float  # quantiles of log10 singular values, pooled
    q25: float
    q50: float
    q75: float
    q95: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _weighted_quantiles(values: torch.Tensor, weights: torch.Tensor) -> list[float]:
    order = torch.argsort(values)
    v, w = values[order], weights[order]
    cum = torch.cumsum(w, 0) / w.sum()
    return [float(v[min(int(torch.searchsorted(cum, q)), len(v) - 1)]) for q in QUANTILES]


def _row(
    depth: int, method: str, sq: torch.Tensor, weights: torch.Tensor, cond: torch.Tensor
) -> SpectrumRow:
    """sq: eigenvalues of J J^T (batch, k); weights: their quadrature weights (rows sum 1)."""
    batch = sq.shape[0]
    per_input = weights / weights.sum(dim=1, keepdim=True)
    mean = float((per_input * sq).sum(dim=1).mean())
    second = float((per_input * sq**2).sum(dim=1).mean())
    inside = ((sq >= WITHIN**-2) & (sq <= WITHIN**2)).to(sq.dtype)
    with torch.no_grad():
        log_s = 0.5 * torch.log10(sq.clamp(min=1e-300))
    q = _weighted_quantiles(log_s.reshape(-1).cpu(), per_input.reshape(-1).cpu() / batch)
    return SpectrumRow(
        depth,
        method,
        batch,
        sq.shape[1] if method == "exact" else -1,
        mean,
        second - mean**2,
        float(cond.median()),
        float((per_input * inside).sum(dim=1).mean()),
        *q,
    )


def spectrum(
    model: MLP,
    x: torch.Tensor,
    depths: list[int] | None = None,
    method: Method = "auto",
    steps: int = LANCZOS_STEPS,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> list[SpectrumRow]:
    """The Jacobian's spectrum at ``depths`` (default: the last layer) for the batch ``x``,
    computed on ``device`` (default: where ``x`` is; 'cuda' works from a CPU model)."""
    total = len(model.layers)
    depths = sorted(set(depths or [total]))
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")
    if depths[0] < 1 or depths[-1] > total:
        raise ValueError(f"depths must lie in [1, {total}], got {depths}")
    f = factors(model, x, dtype, device)
    width = f.slopes[0].shape[1]
    use = ("exact" if width <= EXACT_MAX_WIDTH else "lanczos") if method == "auto" else method
    rows = []
    if use == "exact":
        for depth, s in exact_singular_values(f, depths).items():
            sq = s**2
            with torch.no_grad():
                cond = torch.log10(s[:, 0]) - torch.log10(s[:, -1])
            rows.append(_row(depth, "exact", sq, torch.ones_like(sq), cond))
        return rows
    for depth in depths:
        theta, tau = lanczos(f, depth, steps)
        with torch.no_grad():
            top = theta.amax(dim=1)
            bottom = torch.where(tau > 1e-10, theta, torch.full_like(theta, math.inf)).amin(dim=1)
            cond = 0.5 * (torch.log10(top) - torch.log10(bottom))
        row = _row(depth, "lanczos", theta, tau, cond)
        rows.append(SpectrumRow(**{**row.as_dict(), "width": width}))
    return rows
