"""The training experiments' claims: the stability verdict predicts trainability with depth,
and float16 loses the bottom layers' gradients where loss scaling keeps them.

Three fixed seeds each (the quick size), every one must hold. Measured margins: Kaiming relu
at depth 30 keeps 0.16 to 0.42 of its loss against the bar 0.5, Xavier 0.99 to 1.02 against
0.9; pure float16 zeroes 100 % of the bottom layer's weight gradients, loss scaling under
1 %. With margins this wide a fresh seed fails with probability q well under 1e-2, and all
three hold with probability (1-q)^3 > 0.97; the seeds are fixed, so the suite never flakes.
Witnesses: N(0, 1) weights (explode, the run diverges), a verdict that calls everything
stable, and float16 without loss scaling.
"""

import functools

import pandas as pd
import pytest
from witness import assert_fails_on

from stability.experiments import depth, float16

CHAPTER = "The notes' experiments: training"
pytestmark = pytest.mark.usefixtures("one_thread")
SEEDS = (0, 1, 2)
STEPS = depth.STEPS[True]
PAIR = (("relu", "xavier_normal", 30), ("relu", "kaiming_normal", 30))
F16_STEPS = 30  # the zero fractions show from the first step; a few steps keep it cheap


@functools.cache
def _trained(init: str) -> pd.Series:
    """Loss ratio per seed of relu at depth 30 with ``init``."""
    rows = [depth.train_config("relu", init, 30, s, STEPS) for s in SEEDS]
    return pd.DataFrame(rows).set_index("seed")["loss_ratio"].astype(float)


def check_deep_relu_trains(init: str) -> None:
    ratios = _trained(init)
    assert (ratios < depth.TRAINED).all(), f"relu depth 30 with {init}: ratios {ratios.tolist()}"


def test_kaiming_relu_trains_at_depth_30() -> None:
    check_deep_relu_trains("kaiming_normal")


def test_witness_kaiming_relu_trains_at_depth_30() -> None:
    assert_fails_on("standard_normal", check_deep_relu_trains, variant_name="N(0, 1) weights")
    assert_fails_on("xavier_normal", check_deep_relu_trains, variant_name="Xavier for relu")


@functools.cache
def _judged() -> pd.DataFrame:
    """The pair's runs beside their verdicts (the training above is reused)."""
    rows = pd.concat(
        [_trained(init).rename("loss_ratio").reset_index().assign(activation=a, init=init, depth=d)
         for a, init, d in PAIR]
    )  # fmt: skip
    return rows.merge(depth.verdicts(PAIR, SEEDS), on=["activation", "init", "depth"])


def check_verdict_predicts(rows: pd.DataFrame) -> None:
    agree = depth.predicted(rows)
    assert agree.all(), rows.loc[~agree, ["init", "seed", "verdict", "loss_ratio"]].to_string()


def test_verdict_predicts_trainability() -> None:
    rows = _judged()
    assert set(rows["verdict"]) == {"stable", "vanishes"}  # both sides are tested
    check_verdict_predicts(rows)


def test_witness_verdict_predicts_trainability() -> None:
    blind = _judged().assign(verdict="stable")
    assert_fails_on(blind, check_verdict_predicts, variant_name="a verdict that says stable")


@functools.cache
def _float16(mode: str) -> pd.DataFrame:
    return pd.DataFrame(
        [r for s in SEEDS for r in float16.train_mode(float16.MODES[mode], s, F16_STEPS)]
    )


def check_scaling_keeps_gradients(mode: str) -> None:
    """Pure float16 zeroes over half of the bottom layer's weight gradients; ``mode`` keeps
    at least half of those."""
    pure = float16.bottom_zero(_float16("pure float16"), "pure float16")
    kept = float16.bottom_zero(_float16(mode), mode)
    assert (pure > 0.5).all(), pure.tolist()
    assert (kept < pure / 2).all(), f"{mode}: {kept.tolist()} against pure {pure.tolist()}"


def test_loss_scaling_keeps_float16_gradients() -> None:
    check_scaling_keeps_gradients("AMP + loss scaling")


def test_witness_loss_scaling_keeps_float16_gradients() -> None:
    assert_fails_on("AMP, no scaling", check_scaling_keeps_gradients,
                    variant_name="float16 without loss scaling")  # fmt: skip


def test_float32_keeps_every_gradient() -> None:
    zero = float16.bottom_zero(_float16("float32"), "float32")
    assert (zero == 0).all(), zero.tolist()


def test_witness_float32_keeps_every_gradient() -> None:
    def check(mode: str) -> None:
        zero = float16.bottom_zero(_float16(mode), mode)
        assert (zero == 0).all(), zero.tolist()

    assert_fails_on("pure float16", check, variant_name="pure float16")
