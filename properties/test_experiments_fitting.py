"""The notes' fitting experiments, as claims over seeds: under/overfitting and weight decay.

Each claim is counted over 10 fixed seeds and must hold in at least 9. Why 9 of 10: a claim
that holds for a fresh seed with probability q >= 0.99 (what the full runs show: 10 of 10
with wide margins, see the comments) fails this bar with probability
P(Binomial(10, q) <= 8) <= 45 q^8 (1-q)^2 = 0.0042: a seed set that flakes is rare, and the
seeds are fixed, so the suite itself never flakes. A check that passes on the known-bad
variant beside it (too few features given enough, no decay, the penalty without its 1/2)
cannot tell right from wrong: each has a witness.
"""

import functools

import pandas as pd
import pytest
import torch
from witness import assert_fails_on

from stability.experiments import polynomial, weight_decay
from stability.experiments.common import needed

CHAPTER = "The notes' experiments: fitting"
pytestmark = pytest.mark.usefixtures("one_thread")  # small batched work: one thread is fastest
SEEDS = tuple(range(10))
BAR = needed(len(SEEDS))  # 9 of 10
POLY_EPOCHS = 400  # the quick size


@functools.cache
def _poly(n_features: int) -> pd.DataFrame:
    """Final train and test loss per seed of the ``n_features`` model (cached per size)."""
    rows = pd.DataFrame(polynomial.fit(SEEDS, POLY_EPOCHS, polynomial.LR,
                                       [(f"{n_features} features", n_features)]))  # fmt: skip
    return rows[rows["epoch"] == POLY_EPOCHS].set_index("seed")


def check_underfits(n_few: int) -> None:
    """Too few features: the train loss stays 10x above the right degree's (measured: 300x
    to 2000x at 400 epochs)."""
    few, right = _poly(n_few), _poly(4)
    held = int((few["train_loss"] > 10 * right["train_loss"]).sum())
    assert held >= BAR, f"{n_few} features underfit in {held} of {len(SEEDS)} seeds"


def check_overfits(n_many: int) -> None:
    """Too many features: the test loss stays above the right degree's (measured: 1.3x to
    12x at 400 epochs)."""
    many, right = _poly(n_many), _poly(4)
    held = int((many["test_loss"] > right["test_loss"]).sum())
    assert held >= BAR, f"{n_many} features generalise worse in {held} of {len(SEEDS)} seeds"


def test_too_few_features_underfit() -> None:
    check_underfits(2)


def test_witness_too_few_features_underfit() -> None:
    assert_fails_on(4, check_underfits, variant_name="the right degree as 'too few'")


def test_too_many_features_generalise_worse() -> None:
    check_overfits(20)


def test_witness_too_many_features_generalise_worse() -> None:
    assert_fails_on(4, check_overfits, variant_name="the right degree as 'too many'")


@functools.cache
def _decay(bad_step: bool = False) -> pd.DataFrame:
    """Final rows per (lambda, seed), lambda in {0, 3}; the known-bad step needs 2 seeds to
    show (it is off from the first step)."""
    if bad_step:
        return weight_decay.finals(pd.DataFrame(weight_decay.train(SEEDS[:2], (3.0,),
                                                                   _without_half)))  # fmt: skip
    return weight_decay.finals(pd.DataFrame(weight_decay.train(SEEDS, (0.0, 3.0))))


def _without_half(w: torch.Tensor, g: torch.Tensor, lr: float, wd: float) -> torch.Tensor:
    """Known-bad: the penalty lambda ||w||^2 without its 1/2 decays twice as fast."""
    return (1.0 - 2.0 * lr * wd) * w - lr * g


def check_decay_generalises(lam: float) -> None:
    """Test loss with ``lam`` below lambda = 0 (measured at lambda = 3: 0.08 against 90,
    a thousandfold, in every seed)."""
    f = _decay().set_index(["lambda", "seed"])
    held = int((f.loc[lam]["test_loss"] < f.loc[0.0]["test_loss"]).sum())
    assert held >= BAR, f"lambda={lam} generalises better in {held} of {len(SEEDS)} seeds"


def test_weight_decay_lowers_test_loss() -> None:
    check_decay_generalises(3.0)


def test_witness_weight_decay_lowers_test_loss() -> None:
    assert_fails_on(0.0, check_decay_generalises, variant_name="no decay (lambda = 0)")


def check_matches_torch(bad_step: bool) -> None:
    """The closed-form step and torch's SGD(weight_decay) agree to rounding in float64
    (measured: 4e-15 at most after 400 steps; the bar is 1e-9)."""
    worst = float(_decay(bad_step)["torch_w_diff"].max())
    assert worst < weight_decay.AGREE, f"closed form and torch differ by {worst:.3g}"


def test_closed_form_matches_torch_weight_decay() -> None:
    check_matches_torch(False)


def test_witness_closed_form_matches_torch_weight_decay() -> None:
    assert_fails_on(True, check_matches_torch, variant_name="penalty without its 1/2")
