"""A finding of the low-precision sweep on the MLP, with its witness.

An MLP whose variance grows (ReLU, N(0, 1) weights, width 64, no normalisation: the mean
field multiplies the pre-activation variance by ``sigma_w^2 / 2 = 32`` per layer, from 64 at
layer 1) overflows E4M3 in its forward signal under recipe ``none`` (no scale) at the layer
where the mean field puts it, while recipe ``tensor`` (dynamic amax) overflows at no layer.
The witness: the same check on the Kaiming MLP (variance 2 at every layer, so E4M3's 448 is
over 300 standard deviations out) finds no overflow under ``none`` at all.

The layer window is derived, not guessed. A Linear output at layer ``l`` is N(0, q_l); of
its ``n = batch * width`` values the expected count beyond E4M3's overflow point t is
``2 n Phi(-t / sqrt(q_l))``. A finite-width network's ``q_l`` fluctuates around the mean
field: with Gaussian weights each ReLU layer multiplies it by a ratio of relative variance
about ``7 / width`` (``2 / width`` from the weights' chi-square, ``5 / width`` from
E[relu^4] / E[relu^2]^2 - 1 over the units, which averaging over the batch only lowers), so
log q_l has a standard deviation of about ``sqrt(7 l / width)``. At 5 of those the first
overflow cannot come before the first layer where even ``q_l * F`` expects 0.01 values
beyond t, nor after the first where ``q_l / F`` expects 10 (``F = exp(5 sqrt(7 l /
width))``); here that window is layers 2 to 4 (the mean field alone says 3).
"""

import math

from witness import assert_fails_on

from stability.core.config import MLPConfig
from stability.core.lowp.formats import get_format
from stability.core.lowp.recipes import get_recipe
from stability.core.theory import predict
from stability.usermodel.lowp_mlp import first_events, mlp_format_rows

E4M3 = get_format("e4m3")
DEPTH, WIDTH, BATCH = 8, 64, 64
SIGMAS = 5.0


def _expected_beyond(q: float, n: int) -> float:
    """Expected count of n N(0, q) values beyond E4M3's overflow point."""
    return n * math.erfc(E4M3.forward.overflows_at / math.sqrt(2 * q))


def _window(config: MLPConfig) -> tuple[int, int]:
    """The first layers at which the first overflow may and must have come (5 sigma)."""
    n = BATCH * WIDTH
    q = [p.preact_var for p in predict(config, BATCH)]
    spread = [math.exp(SIGMAS * math.sqrt(7 * layer / WIDTH)) for layer in range(1, DEPTH + 1)]
    may = [_expected_beyond(v * f, n) >= 0.01 for v, f in zip(q, spread, strict=True)]
    must = [_expected_beyond(v / f, n) >= 10 for v, f in zip(q, spread, strict=True)]
    lo = may.index(True) + 1 if any(may) else DEPTH + 1
    hi = must.index(True) + 1 if any(must) else DEPTH + 1
    return lo, hi


def test_unscaled_e4m3_overflows_a_growing_mlp(init: str = "standard_normal") -> None:
    config = MLPConfig(DEPTH, WIDTH, "relu", init, seed=0)
    rows = mlp_format_rows(config, BATCH, [E4M3], [get_recipe("none"), get_recipe("tensor")])
    events = {e["recipe"]: e for e in first_events(rows, target=20.0)}
    first = events["none"]["overflow"]
    assert first is not None, "no layer overflows E4M3 without a scale"
    lo, hi = _window(config)
    assert lo <= first.layer <= hi, (first, lo, hi)
    assert events["tensor"]["overflow"] is None, events["tensor"]


def test_witness_unscaled_e4m3_overflows_a_growing_mlp() -> None:
    assert_fails_on("kaiming_normal", test_unscaled_e4m3_overflows_a_growing_mlp)
