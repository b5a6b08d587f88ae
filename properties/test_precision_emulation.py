"""Numerical stability: float16 emulated on CPU, against real casts and native float16.

On CPU reduced precision is emulated (DESIGN.md): compute in float32 and round each layer's
output and gradient to the target dtype, counting what overflows, underflows or flushes to
zero. Here: the rounding equals a reference cast bit for bit (the whole float16 grid, its
ties, and any float32 hypothesis draws, inf and NaN included), in the forward and the
backward pass; the event counts equal those the thresholds predict; and an emulated network
agrees with the same weights run natively in float16 (on CPU, and on CUDA where present).
"""

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
from formats import FP16_EDGES, THRESHOLDS
from hypothesis import given, settings
from hypothesis import strategies as st
from witness import assert_fails_on

from stability.core.config import MLPConfig
from stability.core.dtypes import DType, get_dtype
from stability.core.emulation import precision_event_counts, round_to, round_with_grad
from stability.core.model import MLP, build_mlp, input_batch

CHAPTER = "Numerical stability: float16 range, overflow and underflow"

any32 = st.floats(width=32)
values32 = st.lists(any32, min_size=1, max_size=64)


# -- emulation against real casts ----------------------------------------------------------


def _reference_cast(x: torch.Tensor, name: str) -> torch.Tensor:
    """float32 -> ``name`` -> float32 by an implementation independent of torch's cast:
    numpy's float16, and round-to-nearest-even on the bits for bfloat16 (its top 16 bits)."""
    a = x.numpy()
    if name == "float16":
        with np.errstate(over="ignore"):
            return torch.from_numpy(a.astype(np.float16).astype(np.float32))
    bits = a.view(np.uint32).astype(np.uint64)
    bias = 0x7FFF + ((bits >> 16) & 1)
    rounded = ((bits + bias) & 0xFFFF0000).astype(np.uint32).view(np.float32).copy()
    rounded[np.isnan(a)] = np.nan
    return torch.from_numpy(rounded)


def bitwise_mismatches(got: torch.Tensor, want: torch.Tensor) -> int:
    """Positions where two float tensors differ (NaN equals any NaN; -0.0 differs from 0.0)."""
    both_nan = got.isnan() & want.isnan()
    same = ((got == want) & (got.signbit() == want.signbit())) | both_nan
    return int((~same).sum())


def cast_mismatches(
    emulate: Callable[[torch.Tensor, torch.dtype], torch.Tensor], name: str, x: torch.Tensor
) -> int:
    """Values where ``emulate(x, dtype)`` differs from the reference cast."""
    return bitwise_mismatches(emulate(x, get_dtype(name).dtype), _reference_cast(x, name))


Emulate = Callable[[torch.Tensor, torch.dtype], torch.Tensor]


def check_matches_cast(emulate: Emulate, name: str, x: torch.Tensor) -> None:
    mismatches = cast_mismatches(emulate, name, x)
    assert mismatches == 0, f"{mismatches} values differ from a real {name} cast"


def flush_to_zero(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Known-bad: rounds correctly but flushes subnormals to zero (no gradual underflow)."""
    r = round_to(x, dtype)
    return torch.where(r.abs() < torch.finfo(dtype).tiny, torch.zeros_like(r), r)


def truncate(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Known-bad: rounds toward zero instead of to nearest (wrong wherever bits are cut)."""
    r = x.to(dtype)
    step_back = torch.nextafter(r, torch.zeros_like(r))  # one ulp of ``dtype`` toward 0
    return torch.where(r.float().abs() > x.abs(), step_back, r).float()


# Every float16 value and every midpoint between neighbours (the ties), each +- 1 float32 ulp:
# the whole float16 grid at once, and everything near it.
_ALL16 = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.float16)
_ALL16 = _ALL16[torch.isfinite(_ALL16)].float().unique()
_MIDS = (_ALL16[1:] + _ALL16[:-1]) / 2
ALL_FLOAT16_NEIGHBOURHOOD = torch.cat(
    [
        grid
        for g in (_ALL16, _MIDS)
        for grid in (g, torch.nextafter(g, g + 1), torch.nextafter(g, g - 1))
    ]
    + [FP16_EDGES]
)


def test_round_with_grad_matches_cast_everywhere() -> None:
    """Exhaustively: emulated float16 equals a real float16 cast on its whole grid and ties."""
    check_matches_cast(round_with_grad, "float16", ALL_FLOAT16_NEIGHBOURHOOD)


def test_witness_round_with_grad_matches_cast_everywhere() -> None:
    """A flush-to-zero emulation (no subnormals) fails the same exhaustive check, by far."""
    error = assert_fails_on(flush_to_zero, check_matches_cast, "float16", ALL_FLOAT16_NEIGHBOURHOOD)
    assert int(str(error).split()[0]) > 1000  # thousands of subnormals and their neighbours


@given(values=values32, name=st.sampled_from(["float16", "bfloat16"]))
def test_round_with_grad_matches_cast(values: list[float], name: str) -> None:
    """For any float32 values (inf, NaN, subnormal included) emulation equals the cast, and the
    backward pass rounds the gradient the same way."""
    x = torch.tensor(values, dtype=torch.float32)
    check_matches_cast(round_with_grad, name, torch.cat([x, FP16_EDGES]))
    leaf = torch.zeros_like(x, requires_grad=True)
    round_with_grad(leaf, get_dtype(name).dtype).backward(x)
    assert leaf.grad is not None
    assert bitwise_mismatches(leaf.grad, _reference_cast(x, name)) == 0


@given(values=values32, name=st.sampled_from(["float16", "bfloat16"]))
def test_witness_round_with_grad_matches_cast(values: list[float], name: str) -> None:
    """Truncation (round toward zero) instead of round-to-nearest fails the same check on
    values with bits below the format: here the edge values plus the drawn ones."""
    x = torch.cat([torch.tensor(values, dtype=torch.float32), FP16_EDGES])
    assert_fails_on(truncate, check_matches_cast, name, x)


def expected_events(x: torch.Tensor, name: str) -> list[int]:
    """(overflow, subnormal, flush) counts from the thresholds alone, no cast involved."""
    overflow_at, flush_at, subnormal_below = THRESHOLDS[name]
    mag = x.abs()
    finite = torch.isfinite(x)
    overflow = finite & (mag >= overflow_at)
    flush = (mag > 0) & (mag <= flush_at)
    subnormal = (mag > flush_at) & (mag < subnormal_below)
    return [int(overflow.sum()), int(subnormal.sum()), int(flush.sum())]


Counter = Callable[[torch.Tensor, DType], torch.Tensor]  # -> (overflow, subnormal, flush)


def check_event_counts(count: Counter, x: torch.Tensor, name: str) -> None:
    got, want = count(x, get_dtype(name)).tolist(), expected_events(x, name)
    assert got == want, f"(overflow, subnormal, flush) counts {got}, thresholds say {want}"


def naive_event_counts(x: torch.Tensor, target: DType) -> torch.Tensor:
    """Known-bad: classifies by the unrounded value (|x| > max overflows, |x| < tiny is
    subnormal, |x| < smallest subnormal flushes), which miscounts the ties: values just below
    tiny round up to it, values above half a subnormal round up to one."""
    mag = x.abs()
    overflow = torch.isfinite(x) & (mag > target.max)
    subnormal = (mag >= target.smallest_subnormal) & (mag < target.tiny)
    flush = (mag > 0) & (mag < target.smallest_subnormal)
    return torch.stack([overflow.sum(), subnormal.sum(), flush.sum()])


@given(values=values32, name=st.sampled_from(["float16", "bfloat16"]))
def test_precision_event_counts(values: list[float], name: str) -> None:
    """Overflow, subnormal and flush counts equal those the thresholds predict, exactly; on a
    tensor already in the dtype (native), infs and subnormals are counted the same."""
    x = torch.cat([torch.tensor(values, dtype=torch.float32), FP16_EDGES])
    target = get_dtype(name)
    check_event_counts(precision_event_counts, x, name)
    native = x[torch.isfinite(x)].to(target.dtype)
    want = expected_events(native.float(), name)
    counts = precision_event_counts(native, target).tolist()
    assert counts == [int(torch.isinf(native).sum()), want[1], 0]


def test_witness_precision_event_counts() -> None:
    """Classifying by the unrounded value miscounts the ties among the edge values, where the
    real counter (the property's, on the same values) is exact."""
    assert_fails_on(naive_event_counts, check_event_counts, FP16_EDGES, "float16")
    check_event_counts(precision_event_counts, FP16_EDGES, "float16")


# -- emulated against native float16 --------------------------------------------------------

# Both runs round each layer's pre-activation and output to float16; they differ only where
# float32 accumulation order flips a rounding. A flip is one float16 ulp (eps = 2^-10
# relative) at each of the two rounding points of a layer, hence rtol = 2 eps per layer. A
# pre-activation flip passes through the activation's slope into an output that can be much
# smaller than the pre-activation (gelu, selu below 0), so relative terms alone do not bound
# it: atol allows one ulp at the batch's largest output magnitude per layer. (Found by the
# 20-seed flake hunt: gelu at depth 1 differed by 2 ulps of a 0.21 output, 1.15e-3 relative.)
FP16_EPS = 2.0**-10
FP16_RTOL = 2 * FP16_EPS
FP16_ATOL = FP16_EPS


def native_copy(model: MLP, dtype: torch.dtype, device: str) -> MLP:
    """The same weights run natively in ``dtype`` on ``device``: no emulated rounding."""
    native = copy.deepcopy(model)
    for block in native.layers:
        block.round_dtype = None
    return native.to(device=device, dtype=dtype)


def emulation_disagreement(
    config: MLPConfig, rounding: torch.dtype, device: str, batch: int = 8
) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Outputs of the emulated model (rounding to ``rounding`` on CPU) and of the same weights
    in native float16 on ``device``, and the depth-scaled tolerances."""
    emulated = build_mlp(config)
    for block in emulated.layers:
        block.round_dtype = rounding
    x = input_batch(config, batch)
    native = native_copy(emulated, torch.float16, device)
    with torch.no_grad():
        want = native(x.to(device=device, dtype=torch.float16)).float().cpu()
        got = emulated(x)
    scale = float(want.abs().max()) if want.numel() else 0.0
    return got, want, FP16_RTOL * config.depth, FP16_ATOL * config.depth * scale


small_fp16_configs = st.builds(
    MLPConfig,
    depth=st.integers(min_value=1, max_value=4),
    width=st.integers(min_value=2, max_value=16),
    activation=st.sampled_from(["relu", "tanh", "gelu", "sigmoid", "selu", "identity"]),
    init=st.sampled_from(["kaiming_normal", "xavier_normal", "lecun_normal", "orthogonal"]),
    dtype=st.just("float16"),
    seed=st.integers(min_value=0, max_value=2**16),
)


def check_emulation(rounding: torch.dtype, config: MLPConfig, device: str) -> None:
    """Rounding to ``rounding`` on CPU reproduces native float16 on ``device``."""
    got, want, rtol, atol = emulation_disagreement(config, rounding, device)
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


# The witnesses' network: bfloat16 rounding of its tanh outputs is off by far more than 2 eps.
WITNESS_CONFIG = MLPConfig(
    depth=2, width=16, activation="tanh", init="xavier_normal", dtype="float16"
)


@given(small_fp16_configs)
def test_emulated_float16_matches_native(config: MLPConfig) -> None:
    """Emulated float16 (float32 compute, rounded per layer) agrees with native float16 on CPU."""
    check_emulation(torch.float16, config, "cpu")


def test_witness_emulated_float16_matches_native() -> None:
    """Emulation that rounds to bfloat16 (8 significant bits, not 11) fails the same check."""
    assert_fails_on(torch.bfloat16, check_emulation, WITNESS_CONFIG, "cpu")


@pytest.mark.cuda
@given(small_fp16_configs)
@settings(max_examples=min(10, settings.default.max_examples))
def test_emulated_float16_matches_cuda(config: MLPConfig) -> None:
    """Emulated float16 on CPU agrees with native float16 on CUDA within the same tolerances."""
    check_emulation(torch.float16, config, "cuda")


@pytest.mark.cuda
def test_witness_emulated_float16_matches_cuda() -> None:
    """bfloat16 rounding on CPU fails agreement with native float16 on CUDA."""
    assert_fails_on(torch.bfloat16, check_emulation, WITNESS_CONFIG, "cuda")
