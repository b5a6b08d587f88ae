"""The finite-width band walked for several inits at once equals each init walked alone.

``predict_bands`` walks the inits of one activation together (``core/band_path.py``): one
quadrature call per layer for all of them. Batching changes only the length of the arrays
the same elementwise arithmetic runs on, so the bands must agree with one init at a time to
float rounding (the log-slopes' central differences amplify an ulp of ``E[phi^2]`` by
``1/LOG_STEP^2``: 1e-9 in log10 is still a millionth of the narrowest band).
"""

import math

import pytest

from stability.core import finite_width
from stability.core.band_path import walk
from stability.core.config import MLPConfig
from stability.core.finite_width import BandLayer, predict_band, predict_bands

FIELDS = ("preact_lo", "preact_hi", "grad_lo", "grad_hi", "preact_sd", "grad_sd", "grad_centre")
TOLERANCE = 1e-9  # log10 units
INITS = ("xavier_normal", "kaiming_normal", "orthogonal", "lsuv", "normal", "lecun_normal")


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finite_width, "_BANDS", {})


def close(a: list[BandLayer], b: list[BandLayer]) -> bool:
    for x, y in zip(a, b, strict=True):
        if x.layer != y.layer or x.caveat != y.caveat:
            return False
        for f in FIELDS:
            u, v = getattr(x, f), getattr(y, f)
            if not (u == v or (math.isnan(u) and math.isnan(v)) or abs(u - v) <= TOLERANCE):
                return False
    return True


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "selu"])
def test_inits_walked_together_equal_each_alone(activation: str) -> None:
    configs = [MLPConfig(depth=12, width=64, activation=activation, init=i) for i in INITS]
    together = predict_bands(configs, 32)
    finite_width._BANDS.clear()
    alone = [predict_band(c, 32) for c in configs]
    assert all(close(t, a) for t, a in zip(together, alone, strict=True))
    # a data-driven init has no prediction, and says why
    lsuv = together[INITS.index("lsuv")]
    assert all(math.isnan(b.preact_lo) and "data-driven" in b.caveat for b in lsuv)


def test_a_different_band_is_not_close() -> None:
    """The comparison above can fail: two inits' bands differ far beyond the tolerance."""
    a, b = (predict_band(MLPConfig(depth=12, width=64, activation="tanh", init=i), 32)
            for i in ("xavier_normal", "kaiming_normal"))  # fmt: skip
    assert not close(a, b)


def test_bands_come_back_in_the_order_asked() -> None:
    configs = [
        MLPConfig(depth=6, width=32, activation="tanh", init="xavier_normal", seed=1),
        MLPConfig(depth=4, width=32, activation="relu", init="kaiming_normal"),
        MLPConfig(depth=6, width=32, activation="tanh", init="xavier_normal", seed=2),
        MLPConfig(depth=6, width=32, activation="tanh", init="lecun_normal"),
    ]
    bands = predict_bands(configs, 16)
    assert [len(b) for b in bands] == [6, 4, 6, 6]
    assert bands[0] == bands[2]  # the seed does not enter the band
    assert all(close(b, predict_band(c, 16)) for b, c in zip(bands, configs, strict=True))


def test_the_cache_keeps_at_most_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finite_width, "CACHE_SIZE", 3)
    inits = ("xavier_normal", "lecun_normal", "kaiming_normal", "orthogonal", "normal")
    predict_bands([MLPConfig(depth=3, width=16, activation="tanh", init=i) for i in inits], 8)
    kept = list(finite_width._BANDS)
    assert [k[1] for k in kept] == list(inits[-3:])  # the latest kept, the oldest dropped


def test_a_walk_refuses_paths_of_different_depths() -> None:
    with pytest.raises(ValueError, match="share a depth"):
        walk("tanh", [[1.0, 1.0], [1.0]], 16)
    assert walk("tanh", [], 16) == []
