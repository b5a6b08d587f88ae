"""The finite-width band's corrections beyond its linear noise, and their caveats.

``core/finite_width.py`` propagates each layer's fresh noise linearly along the mean-field
path. Three things it cannot get that way are computed here, each from one quadrature over
every layer at once: how far the length map bends from its tangent over one input's
spread (``linearisation_error``), the gradient along the forward signal's own direction
that mean field leaves out (``rank_one``, ``docs/theory.md``), and whether the
activation's non-zero mean puts a shared direction in the backward that the band
under-covers (``signal_caveat``).
"""

import numpy as np
import torch

from stability.core.activations import get_activation
from stability.core.layer_shape import (
    LOG_STEP,
    NODES,
    Q_CLAMP,
    WEIGHTS,
    LayerShape,
    phi_and_slope,
    second_moments,
)

# min(E[phi]^2, E[(h phi' - phi)^2]) / E[phi^2] above this at some layer: the backward carries
# a common direction that is neither absent (odd, mean 0) nor exact (homogeneous): flagged
SIGNAL_LIMIT = 0.01


def linearisation_error(
    activation: str, s2: float, q: list[float], single: list[float]
) -> list[float]:
    """Per layer, how far the length map bends away from its tangent over one input's spread.

    The band linearises ``F: ln q -> ln(s2 E[phi^2](q))`` around the mean-field path; a
    single input (batch 1) strays ``sd`` in ln q. Summed over layers, ``|F(x +- 2 sd) - F(x)
    -+ 2 sd F'|`` says in ln units how wrong the tangent is where inputs actually are (gelu
    with kaiming: gain 1/2 at small q, marginal 1 at large q).
    """
    x = np.log(np.clip(np.asarray(q), *Q_CLAMP))
    sd = np.sqrt(np.asarray(single))
    offsets = np.array([-LOG_STEP, LOG_STEP, -2.0, 2.0])
    points = x[:, None] + np.concatenate([[0.0], offsets[:2], 0.0 * offsets[2:]])[None, :]
    points[:, 3:] = x[:, None] + offsets[None, 2:] * sd[:, None]
    f = np.log(s2 * second_moments(activation, np.exp(points.ravel()))[0]).reshape(points.shape)
    tangent = (f[:, 2] - f[:, 1]) / (2 * LOG_STEP)
    err = np.maximum(
        np.abs(f[:, 3] - f[:, 0] + 2.0 * sd * tangent),
        np.abs(f[:, 4] - f[:, 0] - 2.0 * sd * tangent),
    )
    inside = (np.asarray(q) > Q_CLAMP[0]) & (np.asarray(q) < Q_CLAMP[1]) & np.isfinite(err)
    return list(np.cumsum(np.where(inside, err, 0.0)))


def rank_one(
    activation: str,
    q: list[float],
    grad_mf: list[float],
    shapes: list[LayerShape],
    n: float,
    s2: float,
) -> list[float]:
    """The gradient variance along the forward signal's own direction (``docs/theory.md``).

    ``J_{l+1} a_l = phi'(h) h = g a_{l+1} + p``: the signal's direction maps onto the next
    signal with the length map's log-slope g, plus a remainder p that propagates like any
    random direction (the mean-field gains above it). ``R_l = |J_{l->L} a_l|^2 / n`` obeys
    ``R_l = g^2 R_{l+1} + |p|^2/n * MF_{l+1}``; the random projection puts a 1/n share of
    the top gradient on that direction. Each layer's ``W^T`` also injects, along its input
    signal, the Stein term ``a (s2/n) sum_i phi''(h_i) g_i`` (energy ``s2 E[phi''^2] q G``),
    carried down by the signal's gain ``g^2 E[phi^2]_next / E[phi^2]``. Per element: / n.
    """
    depth = len(q)
    qs = np.asarray(q)
    t = torch.tensor(np.sqrt(qs)[:, None] * NODES[None, :], dtype=torch.float64, requires_grad=True)
    out_t = get_activation(activation).factory()(t)
    (d1,) = torch.autograd.grad(out_t.sum(), t, create_graph=True)
    curv = torch.autograd.grad(d1.sum(), t, allow_unused=True)[0] if d1.requires_grad else None
    phi, slope = out_t.detach().numpy(), d1.detach().numpy()
    bend2 = (curv.detach().numpy() ** 2) @ WEIGHTS if curv is not None else np.zeros(depth)
    second = list(phi**2 @ WEIGHTS)
    signal = (qs[:, None] * NODES[None, :] ** 2 * slope**2) @ WEIGHTS  # E[(h phi'(h))^2]
    remainder = [
        max(float(r) - sh.g**2 * f, 0.0) for r, sh, f in zip(signal, shapes, second, strict=True)
    ]
    out = [0.0] * depth
    r, injected = second[-1], 0.0
    # Mean-field already gives every direction (the signal's too) a 1/n share of G_l: only
    # the excess over it is added (0 at the top, where the gradient is R; 0 for relu).
    for layer in range(depth - 1, 0, -1):  # layer l (1-based): its next is index ``layer``
        r = shapes[layer].g ** 2 * r + remainder[layer] * grad_mf[layer]
        gain = shapes[layer].g ** 2 * second[layer] / second[layer - 1] if second[layer - 1] else 0
        injected = gain * injected + s2 * float(bend2[layer]) * q[layer] * grad_mf[layer]
        top = r / second[layer - 1] if second[layer - 1] > 0 else 0.0
        out[layer - 1] = max(top + injected - grad_mf[layer - 1], 0.0) / n
    return out


def signal_caveat(activation: str, q: list[float]) -> str:
    """Why the backward band is not to be trusted where the activation's mean moves.

    A non-zero mean ``E[phi]`` is a direction all inputs share; the gradient along it is
    exactly mean-field's for a positively homogeneous activation (``h phi' = phi``: relu,
    leaky_relu) and absent for a zero-mean one (tanh, selu at its fixed point). Otherwise
    (elu, silu, gelu, softplus with Kaiming) the backward has a part along it that
    ``rank_one`` estimates only to first order, and the measured seeds miss the band
    (``docs/theory.md``: silu at width 512, 35 of 48 seeds inside; elu 37 of 48).
    """
    qs = np.clip(np.asarray(q), *Q_CLAMP)
    h = np.sqrt(qs)[:, None] * NODES[None, :]
    phi, slope = phi_and_slope(activation, h)
    second = np.maximum(phi**2 @ WEIGHTS, np.finfo(float).tiny)
    mean2 = (phi @ WEIGHTS) ** 2 / second
    defect = ((h * slope - phi) ** 2 @ WEIGHTS) / second
    share = float(np.max(np.minimum(mean2, defect)))
    if share <= SIGNAL_LIMIT:
        return ""
    return (
        f"backward: a non-zero mean ({share:.0%} of the second moment) that the activation "
        "does not carry homogeneously; the gradient along that shared direction is estimated "
        "only to first order (the rank-one term), so the backward band under-covers"
    )
