"""The dropout experiment's claims: the gap narrows, eval is the identity, the mask is
unbiased, and a fixed seed with fixed initial weights reproduces a run bit for bit.

The gap claim is counted over 5 fixed seeds and must hold in all 5 (``needed(5)``): at the
quick size the gap narrows by 0.23 on average with a seed-to-seed spread of 0.05 (4.5
sigma, over 10 seeds), so a fresh seed fails with probability q < 1e-4 and the bar fails
with P(Binomial(5, q) >= 1) < 5e-4; the seeds are fixed, so the suite never flakes. The
other three are exact (bit for bit) or 5-sigma statistics over 200 masks per logit (false
alarm 1e-4 per run). Witnesses: dropout left out, dropout kept on in eval, the unscaled
mask, and a run whose masks come from another seed (or whose weights start elsewhere).
"""

import functools

import pytest
import torch
from witness import assert_fails_on

from stability.experiments import dropout
from stability.experiments.common import needed

CHAPTER = "The notes' experiments: dropout"
pytestmark = pytest.mark.usefixtures("one_thread")
SEEDS = tuple(range(5))  # 5 runs per p: the suite's time budget
BAR = needed(len(SEEDS))
STEPS = dropout.STEPS[True]
SHORT = 40  # steps for the exact checks: enough to move every weight, few to stay cheap
P = 0.5


@functools.cache
def _gaps(p: float, variant: str) -> dict[int, float]:
    """Final train - test accuracy gap per seed."""
    out = {}
    for seed in SEEDS:
        last = dropout.train_run(seed, p, STEPS, variant).rows[-1]
        out[seed] = float(last["train_acc"]) - float(last["test_acc"])  # type: ignore[arg-type]
    return out


def check_gap_narrows(variant: str) -> None:
    plain, dropped = _gaps(0.0, "inverted"), _gaps(P, variant)
    held = sum(dropped[s] < plain[s] for s in SEEDS)
    assert held >= BAR, f"p={P} ({variant}) narrows the gap in {held} of {len(SEEDS)} seeds"


def test_dropout_narrows_the_gap() -> None:
    check_gap_narrows("inverted")


def test_witness_dropout_narrows_the_gap() -> None:
    assert_fails_on("forgotten", check_gap_narrows, variant_name="dropout left out")


@functools.cache
def _short(variant: str, seed: int = 0, init_seed: int | None = None,
           mask_seed: int | None = None) -> dropout.Run:  # fmt: skip
    return dropout.train_run(seed, P, SHORT, variant, init_seed, mask_seed)


def _probe_inputs(seed: int = 0) -> torch.Tensor:
    return dropout.make_data(seed)[0][dropout.N_TRAIN : dropout.N_TRAIN + 100]


def check_eval_is_identity(variant: str) -> None:
    assert dropout.eval_is_identity(_short(variant).model, _probe_inputs())


def test_eval_mode_is_identity() -> None:
    check_eval_is_identity("inverted")


def test_witness_eval_mode_is_identity() -> None:
    assert_fails_on("always on", check_eval_is_identity, variant_name="dropout on in eval")


def check_unbiased(variant: str) -> None:
    model = _short("inverted").model
    model.drop = dropout.VARIANTS[variant]
    try:
        assert dropout.unbiased(model, _probe_inputs())
    finally:
        model.drop = dropout.VARIANTS["inverted"]


def test_dropout_is_unbiased_in_training() -> None:
    check_unbiased("inverted")


def test_witness_dropout_is_unbiased_in_training() -> None:
    assert_fails_on("unscaled", check_unbiased, variant_name="dropout without 1/(1-p)")


def check_reproduced(other: dict[str, int]) -> None:
    """Two runs, one seed: identical accuracies and weights (``other`` changes the second's
    initial weights or mask seed: the notes' two things to fix)."""
    first = _short("inverted")
    second = dropout.train_run(0, P, SHORT, "inverted", other.get("init"), other.get("mask"))
    assert dropout.same_run(first, second)


def test_fixed_seed_reproduces_a_dropout_run() -> None:
    check_reproduced({})


def test_witness_fixed_seed_reproduces_a_dropout_run() -> None:
    assert_fails_on({"mask": 12345}, check_reproduced, variant_name="masks from another seed")
    assert_fails_on({"init": 12345}, check_reproduced, variant_name="other initial weights")
