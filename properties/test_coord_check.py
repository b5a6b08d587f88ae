"""Coordinate checks (muP, Depth-muP, CompleteP): the scale that survives width and depth.

Each property runs ``stability.scaling.run_check`` on the built-in residual MLP or on
``examples/transformer_scaling.py`` at small sizes (widths 32-256, three Adam steps, three
seeds: every number fixed, so every run is the same) and asserts its verdicts; the tolerance
of each exponent is the fit's own (``fit``: regression standard error times a Bonferroni t
quantile for a 1 % family-wise false alarm), never picked here. The witnesses are the
mistakes coordinate checks exist to catch: muP without its output multiplier, with the
hidden lr left unscaled, with Adam's eps left unscaled where it is comparable to the
gradients (nanoGPT-mup's report), and residual branches left unscaled with depth.
"""

import functools
from dataclasses import replace
from typing import Any

import pytest

from properties.witness import assert_fails_on
from stability.scaling.exponents import expected
from stability.scaling.fit import drifting
from stability.scaling.run import CoordSpec, run_check

MLP = CoordSpec(widths=(32, 64, 128, 256), seeds=3, steps=(1, 2, 3), param="mup")
TRANSFORMER = replace(
    MLP,
    model="examples.transformer_scaling:build",
    input="examples.transformer_scaling:make_batch",
    loss="cross_entropy",
)
DEPTH = CoordSpec(widths=(64,), depths=(2, 4, 8, 16), seeds=3, steps=(1, 2, 3),
                  param="depth-mup")  # fmt: skip
DEEP_TRANSFORMER = replace(DEPTH, model=TRANSFORMER.model, input=TRANSFORMER.input,
                           loss=TRANSFORMER.loss)  # fmt: skip
# Adam's eps at the base width near the hidden gradients' RMS there (~6e-4 at width 32, and
# shrinking as 1/width under muP): the regime where an unscaled eps takes over the step.
SMALL_GRADIENT_EPS = 3e-4
MODELS = pytest.mark.parametrize("base", [MLP, TRANSFORMER], ids=["mlp", "transformer"])
OUTPUT = {MLP.model: "readout", TRANSFORMER.model: "head"}


@functools.cache
def checked(spec: CoordSpec) -> dict[str, Any]:
    """One run per spec for the whole file (the witnesses reuse the properties' runs)."""
    return run_check(spec)


def check_stable(spec: CoordSpec, axis: str = "width") -> None:
    """Every module's verdict on ``axis`` is ``<axis>-stable``."""
    table = checked(spec)["verdicts"]
    on_axis = table[table["axis"] == axis]
    assert len(on_axis) >= 4, f"only {len(on_axis)} modules judged on {axis}"
    drifts = list(drifting(on_axis))
    assert not drifts, "\n".join(drifts)


@MODELS
def test_mup_is_width_stable(base: CoordSpec) -> None:
    check_stable(base)


@MODELS
@pytest.mark.parametrize(
    ("rule", "says"),
    [("output-multiplier", "the output multiplier is not 1/width"),
     ("hidden-lr", "the hidden weights' lr is not x base/width")],
    ids=["no-output-multiplier", "hidden-lr-unscaled"],
)  # fmt: skip
def test_witness_mup_is_width_stable(base: CoordSpec, rule: str, says: str) -> None:
    failure = assert_fails_on(replace(base, without=(rule,)), check_stable)
    assert says in str(failure)


def test_mup_is_width_stable_at_small_gradient_scale() -> None:
    check_stable(replace(MLP, eps=SMALL_GRADIENT_EPS))


def test_witness_mup_is_width_stable_at_small_gradient_scale() -> None:
    bad = replace(MLP, eps=SMALL_GRADIENT_EPS, without=("eps",))
    failure = assert_fails_on(bad, check_stable)
    assert "Adam's epsilon is not scaled by base/width" in str(failure)


def check_logits_grow_as_theory(spec: CoordSpec) -> None:
    """The output layer's own first update moves the logits as width^1 under SP with Adam:
    each entry of dW is about lr, and dW x sums fan_in aligned terms. Clearly positive (more
    than its tolerance above 0) and within its tolerance of the table's exponent. After one
    step only: later steps' updates follow features SP has already moved out of line."""
    fits = checked(spec)["fits"]
    rows = fits[(fits["module"] == OUTPUT[spec.model]) & (fits["figure"] == "dwx_rms")
                & (fits["step"] == 1)]  # fmt: skip
    assert len(rows) == 1
    theory = expected("width", "sp", "adam", "output", "dwx_rms")
    assert theory == 1.0
    for r in rows.itertuples():
        assert r.slope - r.tol > 0, f"step {r.step}: width^{r.slope:.2f} +- {r.tol:.2f}"
        assert abs(r.slope - theory) <= r.tol, f"step {r.step}: width^{r.slope:.2f} +- " \
            f"{r.tol:.2f}, theory width^{theory:g}"  # fmt: skip


@MODELS
def test_sp_adam_logits_grow_as_theory(base: CoordSpec) -> None:
    check_logits_grow_as_theory(replace(base, param="sp"))


@MODELS
def test_witness_sp_adam_logits_grow_as_theory(base: CoordSpec) -> None:
    assert_fails_on(base, check_logits_grow_as_theory, variant_name="muP (flat logits)")


DEEP = [(DEPTH, "depth-mup"), (DEPTH, "completep"), (DEEP_TRANSFORMER, "completep")]
IDS = ["mlp-depth-mup", "mlp-completep", "transformer-completep"]
DEPTHS = pytest.mark.parametrize(("base", "param"), DEEP, ids=IDS)


@DEPTHS
def test_residual_branches_are_depth_stable(base: CoordSpec, param: str) -> None:
    check_stable(replace(base, param=param), "depth")


@DEPTHS
def test_witness_residual_branches_are_depth_stable(base: CoordSpec, param: str) -> None:
    bad = replace(base, param=param, without=("branch-multiplier", "depth-lr"))
    failure = assert_fails_on(bad, check_stable, "depth")
    assert "not multiplied by 1/sqrt(L)" in str(failure)
