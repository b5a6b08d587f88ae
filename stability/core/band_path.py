"""The finite-width band's walk down the mean-field path, for several inits at once.

Each layer's shape statistics (``core/layer_shape.py``) depend on the layer before it (the
input correlation ``c`` and its random part), so the walk is sequential in depth; but the
inits of one activation walk side by side, and each layer's quadrature is then one call
of the activation for all of them. The log-slopes need only the mean-field q's, known up
front: one call for every layer and init. A sweep's stack holds one activation and several
inits, so its bands cost one walk (issue 27: the band was a seventh of the command).
"""

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from stability.core.layer_shape import Q_CLAMP, LayerShape, band_steps, log_slopes


def walk(activation: str, paths: Sequence[Sequence[float]], width: int) -> list[list[LayerShape]]:
    """Per path (one init's mean-field q per layer, all of one depth), its layers' shapes
    with ``c_eff``: the next layer's input correlation, finite-width part included."""
    if not paths:
        return []
    n, k, depth = float(width), len(paths), len(paths[0])
    if any(len(p) != depth for p in paths):
        raise ValueError("the paths of one walk share a depth")
    q = np.clip(np.asarray(paths, dtype=np.float64), *Q_CLAMP)  # (K, depth)
    slopes = log_slopes(activation, q.T.ravel()).reshape(depth, k, 4)
    c, spread = [0.0] * k, [1.0 / n] * k  # independent N(0, 1) inputs: c = 0 +- 1/sqrt(n)
    shapes: list[list[LayerShape]] = [[] for _ in range(k)]
    for layer in range(depth):
        # Two inputs at width n correlate by c plus a random part of variance ``spread``,
        # which each layer renews ((1 - c^2)^2 / n) and carries with the correlation map's
        # slope: their noises covary at that effective correlation, which no batch averages.
        points = [
            (float(q[j, layer]), c[j], min(math.sqrt(c[j] ** 2 + spread[j]), 1.0)) for j in range(k)
        ]
        for j, (shape, noisy, slope) in enumerate(band_steps(activation, points, slopes[layer])):
            c_next_eff = math.sqrt(shape.c_next**2 + slope**2 * spread[j])
            shapes[j].append(replace(shape, rho=noisy.rho, rho_slope=noisy.rho_slope,
                                     cross_rho=noisy.cross_rho, c_eff=c_next_eff))  # fmt: skip
            c[j] = shape.c_next
            spread[j] = slope**2 * spread[j] + (1.0 - c[j] ** 2) ** 2 / n
    return shapes
