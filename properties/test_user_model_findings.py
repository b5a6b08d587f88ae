"""Findings on the examples' networks that a plain MLP cannot show, each with its witness.

The networks are the ones in ``examples/`` that ``stability probe`` runs on (loaded from
their files, as the property suite does not put the repository root on ``sys.path``), and
the statistics come from the per-module probe (``stability.usermodel.probe.ModuleProbe``),
read by the qualified names a user sees.

(a) A residual stack adds its branch's variance at every block. In the ResNet-style MLP the
branch reads a batch-normalised input, so at Kaiming it adds about ``c = 1`` times the
input variance each time: ``Var_l / Var_0 = 1 + l c``, a line, where a plain Kaiming MLP or
the same stack without skips stays flat (slope 0). Tolerance: ``c`` is the least-squares
slope through ``(0, 1)``; its spread comes from the sample cross term ``2 <x, f(x)> / (n B)``
of each block (zero in expectation over the weights), so it scales as ``1 / sqrt(n B)``.
Measured over 100 seeds at batch 32: sd 0.103 at width 32 and 0.078 at width 64 (ratio
0.76, against 0.71 for that scaling), i.e. ``sd(c) ~ 3.3 / sqrt(n B)``. The claim allows
5 sd: ``|c - 1| <= 16.5 / sqrt(n B)`` (0.52 at 32 x 32), so the flat variants, 1 away,
sit at >= 9 sd. Linearity: the largest relative distance of a block from the line was 0.207
at width 32 and 0.135 at width 64 (100 seeds; mean 0.098 and 0.064): the claim allows
``RESIDUAL_SCALE / sqrt(n B)`` = 0.5 at 32 x 32, 2.4x the worst seen, while geometric
growth ``(1 + c)^l`` misses a line by a factor of ~2 at depth 4.

(b) LayerNorm resets scale: whatever the embedding's scale ``s``, ``layers.0.ln1``'s output
has variance ``1 - eps / (s^2 v_row + eps)`` (each row is centred, and its biased variance
divided by itself plus ``eps = 1e-5``; weight 1, bias 0 at init). For ``s >= 0.1`` and row
variances ``v_row >= 0.2`` (width 16: a chi-square with 15 degrees of freedom is below 0.2
of its mean with probability ~1e-4 per row) that is within 5e-3 of 1; float32 rounding adds
~1e-6. The claim allows 1e-2. Witness: the same network with the LayerNorms replaced by
identities passes the scale through (variance ``s^2``).

(c) Softmax without max subtraction overflows in float16: ``exp(x)`` is inf for
``x >= ln(65520) ~ 11.09`` (65504 is the largest finite value, halfway to the next binade
rounds up), and inf / inf is NaN. With the max subtracted every exponent is <= 0, so no
logit a float16 can hold (|x| <= 65504) overflows. Witness: the naive softmax on the same
logits is not finite. This needs no tolerance: finiteness is exact.
"""

import functools
import importlib.util
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from torch import nn
from witness import assert_fails_on

from stability.usermodel.probe import ModuleProbe

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SLOPE_SD_SCALE = 3.3  # sd(c) ~ 3.3 / sqrt(width * batch), measured (module docstring)
RESIDUAL_SCALE = 16.0  # largest relative distance from the line allowed, times 1/sqrt(nB)
BATCH = 32
LN_TOLERANCE = 1e-2
FLOAT16_EXP_LIMIT = math.log(65520.0)  # exp(x) rounds to inf in float16 from here on

pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def example_module(name: str) -> ModuleType:
    """``examples/<name>.py``, loaded from its file."""
    spec = importlib.util.spec_from_file_location(
        f"stability_examples_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- (a) a residual stack's variance grows linearly with depth ---------------------------
def resmlp(depth: int, width: int) -> nn.Module:
    net: nn.Module = example_module("resmlp").build(depth=depth, width=width, skip=True)
    return net


def resmlp_without_skips(depth: int, width: int) -> nn.Module:
    net: nn.Module = example_module("resmlp").build(depth=depth, width=width, skip=False)
    return net


def plain_kaiming_mlp(depth: int, width: int) -> nn.Module:
    """The project's plain case: Linear + ReLU blocks at Kaiming, named ``blocks.<i>``."""
    blocks = []
    for _ in range(depth):
        linear = nn.Linear(width, width)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
        blocks.append(nn.Sequential(linear, nn.ReLU()))
    net = nn.Module()
    net.blocks = nn.Sequential(*blocks)
    net.forward = net.blocks.forward  # type: ignore[method-assign]
    return net


def relative_variances(build: Any, depth: int, width: int, seed: int) -> np.ndarray:
    """``Var_l / Var_0`` for l = 0..depth: each block's output by the probe, by name."""
    torch.manual_seed(seed)
    net = build(depth, width)
    x = torch.randn(BATCH, width, generator=torch.Generator().manual_seed(seed + 1))
    names = [f"blocks.{i}" for i in range(depth)]
    with torch.no_grad(), ModuleProbe(net, names) as p:
        net(x)
    rows = {r["module"]: r for r in p.rows()}
    v0 = float(x.double().var(correction=0))
    return np.array([1.0] + [rows[n]["fwd_var"] / v0 for n in names])


@pytest.mark.parametrize("build", [resmlp])
@given(
    depth=st.integers(min_value=4, max_value=8),
    width=st.integers(min_value=32, max_value=64),
    seed=st.integers(min_value=0, max_value=2**16),
)
@example(depth=6, width=32, seed=0)
def test_residual_variance_grows_linearly_with_depth(
    build: Any, depth: int, width: int, seed: int
) -> None:
    v = relative_variances(build, depth, width, seed)
    layers = np.arange(depth + 1)
    c = float(((v - 1) * layers).sum() / (layers * layers).sum())  # least squares via (0, 1)
    scale = 1 / math.sqrt(width * BATCH)
    assert abs(c - 1) <= 5 * SLOPE_SD_SCALE * scale, (c, v)
    line = 1 + c * layers
    assert float(np.max(np.abs(v - line) / line)) <= RESIDUAL_SCALE * scale, (c, v)


@pytest.mark.parametrize("variant", [resmlp_without_skips, plain_kaiming_mlp])
def test_witness_residual_variance_grows_linearly_with_depth(variant: Any) -> None:
    assert_fails_on(variant, test_residual_variance_grows_linearly_with_depth)


# -- (b) LayerNorm resets scale ----------------------------------------------------------
def ln_output_variance(norm: bool, log10_scale: float) -> tuple[float, float]:
    """Variance of the embedding (scaled by 10^log10_scale) and of ``layers.0.ln1``."""
    torch.manual_seed(0)
    net = example_module("transformer").build(depth=1, width=16, heads=2, norm=norm)
    with torch.no_grad():
        net.embed.weight.mul_(10.0**log10_scale)
    tokens, _ = example_module("transformer").make_batch()
    with torch.no_grad(), ModuleProbe(net, ["embed", "layers.0.ln1"]) as p:
        net(tokens)
    rows = {r["module"]: r for r in p.rows()}
    return rows["embed"]["fwd_var"], rows["layers.0.ln1"]["fwd_var"]


@pytest.mark.parametrize("norm", [True])
@given(log10_scale=st.floats(min_value=-1.0, max_value=3.0))
@example(log10_scale=2.0)
def test_layernorm_resets_scale(norm: bool, log10_scale: float) -> None:
    embedded, normalised = ln_output_variance(norm, log10_scale)
    assert embedded > 0.3 * 100.0**log10_scale  # the input really has that scale
    assert abs(normalised - 1.0) <= LN_TOLERANCE, (log10_scale, embedded, normalised)


def test_witness_layernorm_resets_scale() -> None:
    assert_fails_on(False, test_layernorm_resets_scale, variant_name="no LayerNorm")


# -- (c) an attention softmax overflows in float16 without max subtraction ---------------
@st.composite
def float16_logits(draw: st.DrawFn) -> torch.Tensor:
    """Rows of logits a float16 holds, each with a largest entry past exp's overflow."""
    rows = draw(st.integers(min_value=1, max_value=4))
    cols = draw(st.integers(min_value=2, max_value=32))
    peak = draw(st.floats(min_value=FLOAT16_EXP_LIMIT + 0.1, max_value=60000.0))
    seed = draw(st.integers(min_value=0, max_value=2**16))
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.rand(rows, cols, generator=gen) * 2 - 1) * peak
    logits[:, 0] = peak
    return logits.to(torch.float16)


@pytest.mark.parametrize("kind", ["stable"])
@given(logits=float16_logits())
@example(logits=torch.tensor([[12.0, 0.0, -3.0]], dtype=torch.float16))
def test_float16_attention_softmax_is_finite(kind: str, logits: torch.Tensor) -> None:
    softmax = example_module("transformer").Softmax(kind, "float16")
    probs = softmax(logits)
    assert probs.dtype == torch.float16
    assert bool(torch.isfinite(probs).all()), (kind, logits)
    # Each row sums to 1 up to float16 rounding of at most `cols` terms (eps 2^-10 each).
    sums = probs.float().sum(dim=-1)
    assert bool(((sums - 1).abs() <= logits.shape[-1] * 2.0**-10).all()), sums


def test_witness_float16_attention_softmax_is_finite() -> None:
    assert_fails_on("naive", test_float16_attention_softmax_is_finite)
