"""Numerical stability: NaN and Inf, where they come from and the largest stable learning rate.

The notes' last question: where do ``nan`` and ``inf`` come from? inf from a learning rate or
initial weights that are too large, nan typically from a division by zero; the remedy is to
lower the learning rate and the init variance until it trains. Checked here on the divergence
doctor (``stability.train.doctor``): the largest stable learning rate its search finds on a
quadratic is 2 / lambda_max; an overflow planted at a known layer is attributed to that layer
and to the forward pass; a planted NaN (0/0 or inf - inf) is called a NaN, not an overflow.
(The loss scaler, the remedy for float16 gradients, is in ``test_loss_scaling.py``.)
"""

import math
from collections.abc import Callable
from dataclasses import replace

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from witness import assert_fails_on

from stability.core.config import MLPConfig
from stability.train.doctor import INF, NAN, Diagnosis, diagnose
from stability.train.lr_search import (
    Quadratic,
    SearchResult,
    largest_stable_lr,
    random_quadratic,
)
from stability.train.trainer import TrainConfig, Trainer

CHAPTER = "Numerical stability: NaN and Inf"

# The search's answer against 2 / lambda_max. Its own error budget (see lr_search's module
# docstring): bisection to a bracket ratio of 1 + 1e-3, plus the finite-horizon rule, which can
# only err upward and by at most ln(dim) / (4 T) = ln(24) / 800 = 0.4 % here (dim <= 24,
# T = 200 steps). Both are deterministic bounds, not statistics, so 5 % is a wide margin.
LR_RTOL = 0.05

DOCTOR_WIDTH = 16
DOCTOR_BATCH = 16
# Planted overflow: rescale layer k so its largest |weight| is PLANT_FRACTION x the dtype's
# max. Its 256 N(0, s^2) weights have max |z| <= 5 except with probability 256 * 5.7e-7, so
# s >= 0.18 max; a row's 16 inputs have sum of squares ~ 16 (Kaiming keeps E[x^2] ~ 1), so a
# pre-activation has s.d. ~ 0.7 max and overflows with probability ~ 0.16: all 256 of a batch
# stay finite with probability 0.84^256 = 4e-20 (and a larger max |z| only lowers s by a
# factor, not the conclusion). float16 is emulated: the float32 matmul stays finite and the
# rounding of its output to float16 overflows.
PLANT_FRACTION = 0.9


def relative_error(found: float, q: Quadratic) -> float:
    return abs(found * q.lambda_max / 2.0 - 1.0)


def agrees(found: float, q: Quadratic) -> bool:
    """The search's answer is 2 / lambda_max within LR_RTOL."""
    return relative_error(found, q) <= LR_RTOL


quadratics = st.builds(
    random_quadratic,
    dim=st.integers(min_value=1, max_value=24),
    cond=st.floats(min_value=1.0, max_value=1e3),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)


Criterion = Callable[[Quadratic], Callable[[float], bool]]  # q -> "does lr diverge on q?"


def check_lr_search(criterion: Criterion, q: Quadratic) -> SearchResult:
    """Searching with ``criterion`` finds 2 / lambda_max within LR_RTOL."""
    result = largest_stable_lr(criterion(q), start=1e-2)
    assert agrees(result.lr, q), f"found {result.lr}, 2 / lambda_max = {2.0 / q.lambda_max}"
    return result


def slow_divergence_counts(q: Quadratic) -> Callable[[float], bool]:
    """The doctor's criterion: the quadratic's own (finite-horizon) divergence rule."""
    return q.diverges


def only_nonfinite(q: Quadratic) -> Callable[[float], bool]:
    """Known-bad: ignores slow divergence and waits for a non-finite loss."""
    return lambda lr: not all(math.isfinite(v) for v in q.losses(lr))


@settings(max_examples=15)
@given(quadratics)
def test_lr_search_matches_two_over_lambda_max(q: Quadratic) -> None:
    assert check_lr_search(slow_divergence_counts, q).bracketed


@settings(max_examples=5)
@given(quadratics)
def test_witness_lr_search_matches_two_over_lambda_max(q: Quadratic) -> None:
    """A search that ignores slow divergence (it waits for inf) overshoots by far."""
    assert_fails_on(only_nonfinite, check_lr_search, q)


def doctor_config(depth: int, dtype: str, seed: int) -> TrainConfig:
    model = MLPConfig(depth=depth, width=DOCTOR_WIDTH, dtype=dtype, seed=seed)
    return TrainConfig(model, lr=1e-3, steps=2, batch=DOCTOR_BATCH, samples=DOCTOR_BATCH)


PlantFn = Callable[[Trainer], None]


def plant_overflow(layer: int) -> PlantFn:
    """Scale layer ``layer``'s weights until the largest is PLANT_FRACTION x the dtype's max."""

    def plant(trainer: Trainer) -> None:
        w = trainer.model.body.layers[layer - 1].linear.weight
        with torch.no_grad():
            w.mul_(PLANT_FRACTION * trainer.dtype.max / float(w.abs().max()))

    return plant


def attributed(diag: Diagnosis, layer: int) -> bool:
    """Named the planted layer, forward, at the first step; its first inf (if any) is there."""
    located = diag.where == f"layer {layer}" and diag.phase == "forward" and diag.step == 0
    first = diag.first_inf
    if first is not None:
        located = located and first.where == f"layer {layer}" and first.mechanism == "overflow"
    return located


def check_attributed(diag: Diagnosis, layer: int) -> None:
    assert attributed(diag, layer), diag.summary()


planted_layers = st.integers(min_value=2, max_value=4).flatmap(
    lambda depth: st.tuples(st.just(depth), st.integers(min_value=1, max_value=depth))
)


@settings(max_examples=8)
@given(planted_layers, st.sampled_from(["float32", "float16"]), st.integers(0, 1000))
def test_planted_overflow_is_attributed_to_its_layer(
    depth_layer: tuple[int, int], dtype: str, seed: int
) -> None:
    depth, layer = depth_layer
    diag = diagnose(doctor_config(depth, dtype, seed), prepare=plant_overflow(layer))
    assert diag.status == "diverged"
    check_attributed(diag, layer)


@settings(max_examples=4)
@given(planted_layers, st.sampled_from(["float32", "float16"]), st.integers(0, 1000))
def test_witness_planted_overflow_is_attributed_to_its_layer(
    depth_layer: tuple[int, int], dtype: str, seed: int
) -> None:
    """A detector that watches only the loss sees the failure but cannot name the layer."""
    depth, layer = depth_layer
    cfg = doctor_config(depth, dtype, seed)
    diag = diagnose(cfg, layers=False, prepare=plant_overflow(layer))
    assert diag.status == "diverged"
    assert_fails_on(diag, check_attributed, layer, variant_name="the loss-only diagnosis")


class SignOf(nn.Module):
    """h / |h|: a normalisation without an epsilon; 0/0 where h == 0."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h / h.abs()


class OverflowDifference(nn.Module):
    """exp(h) - exp(h): zero in exact arithmetic, inf - inf once exp(h) overflows."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.exp(h) - torch.exp(h)


PLANTED_BIAS = {"0/0": 0.0, "inf-inf": 100.0}  # exp(100) = 2.7e43 overflows float32
PLANTED_ACTIVATION: dict[str, type[nn.Module]] = {"0/0": SignOf, "inf-inf": OverflowDifference}


def plant_nan(layer: int, how: str) -> PlantFn:
    """Zero layer ``layer``'s weights, set its bias, and swap in a planted activation."""

    def plant(trainer: Trainer) -> None:
        block = trainer.model.body.layers[layer - 1]
        with torch.no_grad():
            block.linear.weight.zero_()
            assert block.linear.bias is not None
            block.linear.bias.fill_(PLANTED_BIAS[how])
        block.activation = PLANTED_ACTIVATION[how]()

    return plant


EXPECTED_MECHANISM = {"0/0": "0 / 0", "inf-inf": "inf - inf"}


def classified_nan(diag: Diagnosis, layer: int, how: str) -> bool:
    return (
        diag.kind == NAN
        and diag.mechanism == EXPECTED_MECHANISM[how]
        and diag.where == f"layer {layer}"
        and diag.phase == "forward"
    )


def check_classified_nan(diag: Diagnosis, layer: int, how: str) -> None:
    assert classified_nan(diag, layer, how), diag.summary()


@given(
    planted_layers,
    st.sampled_from(["0/0", "inf-inf"]),
    st.sampled_from(["float32", "float16"]),
    st.integers(0, 1000),
)
def test_planted_nan_is_classified_as_nan(
    depth_layer: tuple[int, int], how: str, dtype: str, seed: int
) -> None:
    depth, layer = depth_layer
    diag = diagnose(doctor_config(depth, dtype, seed), prepare=plant_nan(layer, how))
    check_classified_nan(diag, layer, how)


@given(planted_layers, st.sampled_from(["float32", "float16"]), st.integers(0, 1000))
def test_witness_planted_nan_is_classified_as_nan(
    depth_layer: tuple[int, int], dtype: str, seed: int
) -> None:
    """Reporting the first non-finite value met, op by op, calls the inf - inf NaN an overflow.

    (The exp overflows first; the NaN is made by the subtraction after it.)
    """
    depth, layer = depth_layer
    diag = diagnose(doctor_config(depth, dtype, seed), prepare=plant_nan(layer, "inf-inf"))
    check_classified_nan(diag, layer, "inf-inf")  # the doctor, on the same run, gets it right
    assert diag.first_inf is not None
    naive = replace(diag, kind=INF, mechanism=diag.first_inf.mechanism)
    name = "the first non-finite value's diagnosis"
    assert_fails_on(naive, check_classified_nan, layer, "inf-inf", variant_name=name)
