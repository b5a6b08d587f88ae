"""The edge of chaos: the q-map, the correlation map, chi_1, depth scales, the critical line.

Mean field for a deep net with weights ``N(0, sigma_w^2 / n)`` and biases ``N(0, sigma_b^2)``
(Poole et al. 2016; Schoenholz et al. 2017, "Deep information propagation"):

- length map ``q_{l+1} = sigma_w^2 E[phi(sqrt(q_l) z)^2] + sigma_b^2``, fixed point ``q*``;
- correlation map of two inputs at ``q*``:
  ``c_{l+1} = (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / q*``, corr(u1, u2) = ``c_l``;
- ``chi_1 = sigma_w^2 E[phi'(h)^2]`` at ``q*``: the slope of the c-map at c = 1. ``chi_1 < 1``
  is order (nearby inputs merge, c* = 1), ``chi_1 > 1`` chaos (c* < 1); ``chi_1 = 1`` is the
  critical line;
- depth scales: ``|q_l - q*| ~ exp(-l / xi_q)`` with ``1/xi_q = -log(dq_map/dq at q*)``
  (Schoenholz eq. 5: ``chi_1 + sigma_w^2 E[phi'' phi]``), and ``|c_l - c*| ~ exp(-l / xi_c)``
  with ``1/xi_c = -log(sigma_w^2 E[phi'(u1) phi'(u2)] at c*)`` (eq. 9; = chi_1 when c* = 1).

Everything is batched over many (sigma_w^2, sigma_b^2) points at once, so a phase diagram
is a few tensor passes rather than a Python loop per point.
"""

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from stability.core.gauss import POINTS_1D, POINTS_2D, derivatives, normal_rule, values

Q_LOW = 1e-30
MARGINAL_RTOL = 1e-9  # |q_map(q) - q| / q below this at both ends: every q is fixed
Q_BISECTIONS = 80  # log-range 138 halved 80 times: relative precision 1e-22 (float64-bound)
Q_DIVERGED = 1e30  # an unbounded activation in the chaotic phase: q grows without limit
C_NEWTON_STEPS = 60
DERIVATIVE_STEP = 1e-5  # relative step of the central difference for dq_map/dq


def _tensor(values: Any) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64).reshape(-1)


def _paired(a: Any, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 1-d float64 tensors of one length (a scalar, or a length-1 one, is repeated)."""
    x, y = _tensor(a), _tensor(b)
    n = max(len(x), len(y))
    return x.expand(n).clone(), y.expand(n).clone()


def second_moment(activation: str, q: torch.Tensor) -> torch.Tensor:
    """``E[phi(h)^2]`` for ``h ~ N(0, q)``, for every entry of ``q``."""
    nodes, weights = normal_rule(POINTS_1D)
    value = values(activation, q.clamp(min=0).sqrt()[:, None] * nodes[None, :])
    return (weights * value**2).sum(dim=1)


def slope_moment(activation: str, q: torch.Tensor, power: int = 2) -> torch.Tensor:
    """``E[phi'(h)^power]`` for ``h ~ N(0, q)``."""
    nodes, weights = normal_rule(POINTS_1D)
    _, slope = derivatives(activation, q.clamp(min=0).sqrt()[:, None] * nodes[None, :])
    return (weights * slope**power).sum(dim=1)


def q_map(activation: str, sw2: torch.Tensor, sb2: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """One layer of the length map."""
    return sw2 * second_moment(activation, q) + sb2


def q_star(activation: str, sw2: Any, sb2: Any) -> torch.Tensor:
    """The stable fixed point of the length map: 0, a finite q*, or inf where q diverges.

    Bisection in log q on ``g(q) = q_map(q) - q`` over [Q_LOW, Q_DIVERGED]: g(0) >= 0, and
    for the registered activations g changes sign once on q > 0 (the map is concave, or
    linear for relu-like ones), so the sign change is the fixed point iteration from any
    q > 0 converges to. g < 0 already at Q_LOW: q* = 0 (e.g. tanh with sigma_w^2 <= 1 and
    no bias); g > 0 still at Q_DIVERGED: q* = inf."""
    sw2, sb2 = _paired(sw2, sb2)

    def g(q: torch.Tensor) -> torch.Tensor:
        return q_map(activation, sw2, sb2, q) - q

    lo = torch.full_like(sw2, math.log(Q_LOW))
    hi = torch.full_like(sw2, math.log(Q_DIVERGED))
    g_lo, g_hi = g(lo.exp()), g(hi.exp())
    # A linear map at its critical sigma_w^2 (identity at 1, relu at 2, no bias) keeps every
    # q: g is rounding at both ends, and its sign would pick 0 or inf by chance. Take 0, the
    # limit the rest of the module reads as "q* = 0" (chi_1 is the same at every q).
    marginal = (g_lo.abs() <= MARGINAL_RTOL * lo.exp()) & (g_hi.abs() <= MARGINAL_RTOL * hi.exp())
    zero, diverged = (g_lo < 0) | marginal, (g_hi > 0) & ~marginal
    for _ in range(Q_BISECTIONS):
        mid = 0.5 * (lo + hi)
        up = g(mid.exp()) > 0
        lo, hi = torch.where(up, mid, lo), torch.where(up, hi, mid)
    q = (0.5 * (lo + hi)).exp()
    q = torch.where(zero, torch.zeros_like(q), q)
    return torch.where(diverged, torch.full_like(q, math.inf), q)


def chi_1(activation: str, sw2: Any, q: Any) -> torch.Tensor:
    """``sigma_w^2 E[phi'(h)^2]`` at pre-activation variance ``q``.

    q is held inside [Q_LOW, Q_DIVERGED]: q* = 0 means the limit q -> 0+ (relu's slope at
    exactly 0 is torch's 0, its limit is 1/2 on average), q* = inf the limit of large q."""
    q = _tensor(q).nan_to_num(posinf=Q_DIVERGED).clamp(Q_LOW, Q_DIVERGED)
    return _tensor(sw2) * slope_moment(activation, q)


def chi_q(activation: str, sw2: Any, q: Any) -> torch.Tensor:
    """The slope of the length map at ``q``: ``sigma_w^2 d E[phi(sqrt(q) z)^2] / dq``."""
    sw2, q = _tensor(sw2), _tensor(q)
    step = DERIVATIVE_STEP * q.clamp(min=1e-12)
    hi, lo = second_moment(activation, q + step), second_moment(activation, (q - step).clamp(min=0))
    slope: torch.Tensor = sw2 * (hi - lo) / (q + step - (q - step).clamp(min=0))
    return slope


def _pair(activation: str, q: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E[phi(u1) phi(u2)], E[phi'(u1) phi'(u2)])`` for variance q and correlation c."""
    nodes, weights = normal_rule(POINTS_2D)
    c = c.clamp(-1.0, 1.0)[:, None, None]
    root = q.clamp(min=0).sqrt()[:, None, None]
    z1, z2 = nodes[None, :, None], nodes[None, None, :]
    v1, s1 = derivatives(activation, (root * z1).expand(len(q), len(nodes), len(nodes)))
    v2, s2 = derivatives(activation, root * (c * z1 + (1.0 - c * c).clamp(min=0).sqrt() * z2))
    w = weights[:, None] * weights[None, :]
    return (w * v1 * v2).sum(dim=(1, 2)), (w * s1 * s2).sum(dim=(1, 2))


def c_map(activation: str, sw2: Any, sb2: Any, q: Any, c: Any) -> torch.Tensor:
    """One layer of the correlation map at variance ``q`` (both inputs at ``q``)."""
    sw2, sb2, q, c = _tensor(sw2), _tensor(sb2), _tensor(q), _tensor(c)
    both, _ = _pair(activation, q, c)
    out: torch.Tensor = (sw2 * both + sb2) / q
    return out


def c_star(activation: str, sw2: Any, sb2: Any, q: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The stable fixed point c* of the correlation map and the map's slope chi_c there.

    Ordered (chi_1 <= 1): c* = 1, chi_c = chi_1. Chaotic: Newton on ``g(c) = c_map(c) - c``
    from c = 0. On [0, 1] the map is a power series in c with non-negative coefficients
    (the kernel's Hermite expansion), so g is convex there, g(0) >= 0 and g(1) = 0 with
    g'(1) = chi_1 - 1 > 0: Newton from 0 climbs monotonically to the root below 1, the
    stable one. (From c = -1 it could stop at -1, a fixed point of every odd activation.)"""
    sw2, sb2, q = _tensor(sw2), _tensor(sb2), _tensor(q)
    c1 = chi_1(activation, sw2, q)
    c = torch.ones_like(q)
    slope = c1.clone()
    chaos = (c1 > 1.0) & torch.isfinite(q) & (q > 0)
    if bool(chaos.any()):
        s, b, qq = sw2[chaos], sb2[chaos], q[chaos]
        x = torch.zeros_like(qq)
        for _ in range(C_NEWTON_STEPS):
            both, slopes = _pair(activation, qq, x)
            g = (s * both + b) / qq - x
            dg = s * slopes - 1.0
            step = torch.where(dg < 0, g / dg, torch.zeros_like(g))
            x = (x - step).clamp(0.0, 1.0)
            if bool((step.abs() < 1e-13).all()):
                break
        _, slopes = _pair(activation, qq, x)
        c[chaos], slope[chaos] = x, s * slopes
    return c, slope


def depth_scale(rate: torch.Tensor) -> torch.Tensor:
    """``xi = -1 / log(rate)``: inf at rate 1 (the critical line), NaN where rate >= 1
    would mean growth rather than decay towards the fixed point."""
    with torch.no_grad():
        xi = -1.0 / torch.log(rate)
    return torch.where(rate >= 1.0, torch.full_like(xi, math.inf), xi)


@dataclass(frozen=True)
class MeanField:
    """Everything mean field says about one (activation, sigma_w^2, sigma_b^2) point."""

    activation: str
    sigma_w2: float
    sigma_b2: float
    q_star: float
    chi_1: float
    c_star: float
    chi_c: float
    xi_q: float
    xi_c: float
    phase: str  # "ordered", "chaotic" or "critical" (|chi_1 - 1| < CRITICAL_BAND)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


CRITICAL_BAND = 1e-6


def mean_field(activation: str, sw2: Any, sb2: Any) -> list[MeanField]:
    """The mean-field picture at every (sw2[i], sb2[i]), batched."""
    sw2, sb2 = _paired(sw2, sb2)
    q = q_star(activation, sw2, sb2)
    c1 = chi_1(activation, sw2, q)
    cs, chic = c_star(activation, sw2, sb2, q)
    xq = depth_scale(chi_q(activation, sw2, q.nan_to_num(posinf=1.0)))
    xc = depth_scale(chic)
    out = []
    for i in range(len(sw2)):
        chi = float(c1[i])
        if not math.isfinite(float(q[i])):
            phase = "chaotic"
        elif abs(chi - 1.0) < CRITICAL_BAND:
            phase = "critical"
        else:
            phase = "ordered" if chi < 1.0 else "chaotic"
        out.append(
            MeanField(
                activation,
                float(sw2[i]),
                float(sb2[i]),
                float(q[i]),
                chi,
                float(cs[i]),
                float(chic[i]),
                float(xq[i]) if math.isfinite(float(q[i])) else math.nan,
                float(xc[i]),
                phase,
            )
        )
    return out


def critical_sigma_w2(
    activation: str, sb2: Any, low: float = 0.1, high: float = 20.0
) -> torch.Tensor:
    """The critical line: for each sigma_b^2 the sigma_w^2 where chi_1(q*) = 1 (bisection;
    NaN where chi_1 - 1 keeps one sign over [low, high])."""
    sb2 = _tensor(sb2)
    lo, hi = torch.full_like(sb2, low), torch.full_like(sb2, high)

    def excess(sw2: torch.Tensor) -> torch.Tensor:
        q = q_star(activation, sw2, sb2)
        return torch.where(torch.isinf(q), torch.ones_like(q), chi_1(activation, sw2, q) - 1.0)

    f_lo, f_hi = excess(lo), excess(hi)
    valid = (f_lo < 0) & (f_hi > 0)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        f = excess(mid)
        lo = torch.where(f < 0, mid, lo)
        hi = torch.where(f < 0, hi, mid)
        if bool(((hi - lo) < 1e-10 * hi).all()):
            break
    return torch.where(valid, 0.5 * (lo + hi), torch.full_like(lo, math.nan))
