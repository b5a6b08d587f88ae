"""Low-precision formats: the element grids, their rounding, and the MX / NVFP4 block scales.

Claims: the format table equals ``torch.finfo`` where torch has the dtype; ``round_element``
(our RNE, used for E3M2 and E2M1 where torch has no cast) is bit-identical to torch's
float8_e4m3fn and float8_e5m2 casts on a sweep of every float32 binade that matters, ties,
inf and NaN included; E2M1 holds exactly {0, 0.5, 1, 1.5, 2, 3, 4, 6} and ties go to even;
an MX block's scale is the OCP MX v1.0 formula, its elements saturate, a NaN poisons the
block; torchao's MX and NVFP4 casts (where installed) agree bit for bit.
"""

import dataclasses
from collections.abc import Callable

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from witness import assert_fails_on

from stability.core.lowp.blocks import mx_quantize, mx_scale_exponent, nvfp4_quantize
from stability.core.lowp.formats import ELEMENTS, Element, format_table, get_format
from stability.core.lowp.recipes import get_recipe
from stability.core.lowp.rounding import round_element
from stability.errors import StabilityError

Rounder = Callable[[torch.Tensor, Element], torch.Tensor]
E2M1_VALUES = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0}
TORCH_CASTS = ("e4m3", "e5m2")


def _toward_zero(x: torch.Tensor, elem: Element) -> torch.Tensor:
    """Known-bad: truncates instead of rounding to nearest even."""
    _, exp = torch.frexp(x.abs())
    step = torch.ldexp(torch.ones_like(x), torch.clamp(exp - 1, min=elem.emin) - elem.mbits)
    q = torch.clamp(torch.trunc(x.abs() / step) * step, max=elem.max)
    return torch.where(x.isnan(), x, torch.copysign(q, x))


def _half_away(x: torch.Tensor, elem: Element) -> torch.Tensor:
    """Known-bad: rounds ties away from zero (``floor(x + 0.5)``) instead of to even."""
    _, exp = torch.frexp(x.abs())
    step = torch.ldexp(torch.ones_like(x), torch.clamp(exp - 1, min=elem.emin) - elem.mbits)
    q = torch.clamp(torch.floor(x.abs() / step + 0.5) * step, max=elem.max)
    return torch.where(x.isnan(), x, torch.copysign(q, x))


def magnitude_sweep() -> torch.Tensor:
    """Every binade 2^-30..2^20, 64 random mantissas each, every tie between grid points of
    both fp8 grids, their neighbours one float32 ulp away, +-0, +-inf, NaN; both signs."""
    g = torch.Generator().manual_seed(24)
    exps = torch.arange(-30, 21, dtype=torch.float32).repeat_interleave(64)
    x = torch.ldexp(1 + torch.rand(exps.numel(), generator=g), exps.int())
    ties = []
    for name in TORCH_CASTS:
        grid = torch.arange(256, dtype=torch.uint8).view(ELEMENTS[name].torch_dtype).float()  # type: ignore[arg-type]
        grid = grid[torch.isfinite(grid) & (grid >= 0)].unique()
        mid = (grid[1:] + grid[:-1]) / 2
        ties += [mid, torch.nextafter(mid, mid * 2), torch.nextafter(mid, torch.zeros_like(mid))]
    special = torch.tensor([0.0, torch.inf, torch.nan, 1e38, 3.4e38, 1e-45])
    pos = torch.cat([x, *ties, special])
    return torch.cat([pos, -pos])


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal as float32 bit patterns, except that any NaN equals any NaN."""
    nan = a.isnan() & b.isnan()
    return bool(((a.view(torch.int32) == b.view(torch.int32)) | nan).all())


@pytest.mark.parametrize("name", TORCH_CASTS)
def test_rounding_matches_torch_casts(name: str, rounder: Rounder = round_element) -> None:
    elem = ELEMENTS[name]
    x = magnitude_sweep()
    want = x.to(elem.torch_dtype).float()  # type: ignore[arg-type]
    got = rounder(x, elem)
    bad = ~((got.view(torch.int32) == want.view(torch.int32)) | (got.isnan() & want.isnan()))
    assert same_bits(got, want), f"{name}: {int(bad.sum())} differ, e.g. {x[bad][:3].tolist()}"


@pytest.mark.parametrize("name", TORCH_CASTS)
def test_witness_rounding_matches_torch_casts(name: str) -> None:
    assert_fails_on(_toward_zero, lambda r: test_rounding_matches_torch_casts(name, r))


@pytest.mark.parametrize("rounder", [round_element])
@given(values=st.lists(st.floats(width=32), min_size=1, max_size=64))
@example(values=[1.3, -0.7, 100.1])  # pins the truncating witness to inputs it gets wrong
def test_rounding_matches_torch_on_any_float32(rounder: Rounder, values: list[float]) -> None:
    x = torch.tensor(values, dtype=torch.float32)
    for name in TORCH_CASTS:
        elem = ELEMENTS[name]
        assert same_bits(rounder(x, elem), x.to(elem.torch_dtype).float())  # type: ignore[arg-type]


def test_witness_rounding_matches_torch_on_any_float32() -> None:
    assert_fails_on(_toward_zero, test_rounding_matches_torch_on_any_float32)


def test_format_table_matches_finfo(table: list[dict[str, object]] | None = None) -> None:
    rows = {r["element"]: r for r in (table or format_table())}
    for name in TORCH_CASTS:
        fi = torch.finfo(ELEMENTS[name].torch_dtype)  # type: ignore[arg-type]
        r = rows[name]
        assert r["max"] == fi.max and r["smallest_normal"] == fi.tiny
        assert r["smallest_subnormal"] == fi.tiny * fi.eps
        assert r["mantissa_bits"] == -torch.tensor(fi.eps).log2().item()
    # No torch dtype: the OCP MX v1.0 table (section 5.3.2, 5.3.3).
    assert (rows["e3m2"]["max"], rows["e3m2"]["smallest_normal"]) == (28.0, 0.25)
    assert rows["e3m2"]["smallest_subnormal"] == 0.0625
    assert (rows["e2m1"]["max"], rows["e2m1"]["smallest_normal"]) == (6.0, 1.0)
    assert rows["e2m1"]["smallest_subnormal"] == 0.5


def test_witness_format_table_matches_finfo() -> None:
    # E4M3 with the IEEE-style top exponent reserved would be max 240; "fn" has 448.
    bad = [dict(r, max=240.0) if r["element"] == "e4m3" else r for r in format_table()]
    assert_fails_on(bad, test_format_table_matches_finfo)


def test_e2m1_grid_and_ties(rounder: Rounder = round_element) -> None:
    elem = ELEMENTS["e2m1"]
    dense = torch.linspace(-8, 8, 16001)
    got = set(rounder(dense, elem).abs().tolist())
    assert got == E2M1_VALUES
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 100.0])
    want = torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0])  # to even; saturate
    assert torch.equal(rounder(ties, elem), want)
    assert torch.equal(rounder(-ties, elem), -want)


def test_witness_e2m1_grid_and_ties() -> None:
    assert_fails_on(_half_away, test_e2m1_grid_and_ties)


def test_e3m2_grid(elem: Element = ELEMENTS["e3m2"]) -> None:
    got = round_element(torch.linspace(0, 40, 64001), elem).unique()
    assert got.numel() == 32 and got.max() == 28.0  # 2^5 codes, all finite
    assert got[1] == 0.0625 and float(got[4]) == 0.25  # 3 subnormals below 2^-2


def test_witness_e3m2_grid() -> None:
    # Three mantissa bits (an E3M3 grid under E3M2's name): 64 codes, not the spec's 32.
    assert_fails_on(dataclasses.replace(ELEMENTS["e3m2"], mbits=3), test_e3m2_grid)


def _floor_exponent(amax: torch.Tensor, elem: Element) -> torch.Tensor:
    return torch.clamp(torch.floor(torch.log2(amax.double())).int() - elem.emax, -127, 127)


def _ceil_exponent(amax: torch.Tensor, elem: Element) -> torch.Tensor:
    """Known-bad: one binade up whenever amax is not a power of two (the CEIL mode)."""
    return torch.clamp(torch.ceil(torch.log2(amax.double())).int() - elem.emax, -127, 127)


@pytest.mark.parametrize("name", ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp4_e2m1"])
def test_mx_scale_is_the_spec_formula(
    name: str, formula: Callable[..., torch.Tensor] = _floor_exponent
) -> None:
    elem = get_format(name).forward
    g = torch.Generator().manual_seed(7)
    x = torch.randn(64, 128, generator=g) * torch.exp2(
        torch.randint(-40, 40, (64, 1), generator=g).float()
    )
    _, _, _, log2_scale = mx_quantize(x, elem)
    amax = x.reshape(64, 4, 32).abs().amax(-1, keepdim=True)
    assert torch.equal(-log2_scale.int(), formula(amax, elem))
    assert torch.equal(mx_scale_exponent(torch.tensor([1.0, 0.0, 1e-45]), elem),
                       torch.tensor([-elem.emax, -127, -127]))  # fmt: skip


def test_witness_mx_scale_is_the_spec_formula() -> None:
    assert_fails_on(_ceil_exponent, lambda f: test_mx_scale_is_the_spec_formula("mxfp8_e4m3", f))


def test_mx_saturates_and_nan_poisons_the_block(
    quantize: Callable[..., tuple[torch.Tensor, ...]] = mx_quantize,
) -> None:
    elem = ELEMENTS["e4m3"]
    block = torch.full((1, 32), 0.5)
    block[0, 0] = 1.99  # X = 2^(0 - 8); 1.99 / X = 509.4 > 448: saturates to 448 * X = 1.75
    deq, scaled, q, _ = quantize(block, elem)
    assert float(deq[0, 0]) == 1.75 and float(q[0, 0]) == 448.0 and float(scaled[0, 0]) > 448
    assert float(deq[0, 1]) == 0.5
    block[0, 5] = torch.nan
    assert bool(quantize(block, elem)[0].isnan().all())


def _nan_swallowed(x: torch.Tensor, elem: Element) -> tuple[torch.Tensor, ...]:
    """Known-bad: NaN replaced by 0 before the block is scaled, so it poisons nothing."""
    return mx_quantize(torch.nan_to_num(x, nan=0.0), elem)


def test_witness_mx_saturates_and_nan_poisons_the_block() -> None:
    assert_fails_on(_nan_swallowed, test_mx_saturates_and_nan_poisons_the_block)


def test_nvfp4_block_scale_is_amax_over_6(block: int = 16) -> None:
    x = torch.zeros(1, 32)
    x[0, :16] = torch.linspace(-3, 3, 16)
    x[0, 16:] = torch.linspace(-0.3, 0.3, 16)
    deq, scaled, _, _ = nvfp4_quantize(x, block)
    # Both block scales are exact in E4M3 relative to the per-tensor scale 3 / 2688: the
    # block amax lands exactly on 6 and dequantises to itself.
    assert float(scaled[0, 15]) == pytest.approx(6.0) and float(deq[0, 15]) == pytest.approx(3.0)
    assert float(scaled[0, 31]) == pytest.approx(6.0, rel=1 / 16)


def test_witness_nvfp4_block_scale_is_amax_over_6() -> None:
    # Blocks of 32 (MX's size): the small half shares the large half's scale, amax 0.6 not 6.
    assert_fails_on(32, test_nvfp4_block_scale_is_amax_over_6)


@pytest.mark.parametrize(
    "kind, name",
    [
        ("format", "fp8"),
        ("format", "mxfp3"),
        ("recipe", "rows"),
        ("recipe", "delayed"),
        ("recipe", "delayed:0"),
        ("recipe", "delayed:4:mean"),
    ],
    ids=lambda v: str(v),
)
def test_unknown_names_get_one_line(
    kind: str, name: str, resolve: Callable[[str, str], object] | None = None
) -> None:
    with pytest.raises(StabilityError) as err:
        if resolve is not None:
            resolve(kind, name)
        else:
            get_format(name) if kind == "format" else get_recipe(name)
    text = str(err.value)
    assert "\n" not in text and repr(name) in text
    assert ("mxfp4" in text) if kind == "format" else ("delayed:H" in text and "tensor" in text)


def _no_choices(kind: str, name: str) -> object:
    """Known-bad: refuses the name without saying what the valid ones are."""
    raise StabilityError(f"unknown {kind} {name!r}")


def test_witness_unknown_names_get_one_line() -> None:
    assert_fails_on(_no_choices, lambda r: test_unknown_names_get_one_line("format", "fp8", r))
    assert_fails_on(_no_choices, lambda r: test_unknown_names_get_one_line("recipe", "rows", r))


# -- torchao, where it installs (a differential test; skipped without it) ------------------

TORCHAO = {"mxfp8_e4m3": torch.float8_e4m3fn, "mxfp8_e5m2": torch.float8_e5m2,
           "mxfp4_e2m1": "fp4"}  # fmt: skip


@pytest.mark.parametrize("name", [*TORCHAO, "mxfp6_e3m2"])
def test_mx_matches_torchao(
    name: str, quantize: Callable[..., tuple[torch.Tensor, ...]] = mx_quantize
) -> None:
    mx = pytest.importorskip("torchao.prototype.mx_formats.mx_tensor")
    consts = pytest.importorskip("torchao.prototype.mx_formats.constants")
    dtype = {**TORCHAO, "mxfp4_e2m1": torch.float4_e2m1fn_x2, "mxfp6_e3m2": consts.DTYPE_FP6_E3M2}[
        name
    ]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(32, 256, generator=g) * torch.exp2(
        torch.randint(-20, 20, (32, 1), generator=g).float()
    )
    scale, data = mx.to_mx(x, dtype, 32)
    want = mx.to_dtype(data, scale, dtype, 32, torch.float32)
    got = quantize(x, get_format(name).forward)[0]
    assert same_bits(got.reshape(want.shape), want)


def _one_ulp_low(x: torch.Tensor, elem: Element) -> tuple[torch.Tensor, ...]:
    """Known-bad: every nonzero value one float32 ulp toward zero after dequantising (a
    rounding slip no tolerance-based comparison would see)."""
    deq = mx_quantize(x, elem)[0]
    return (torch.nextafter(deq, torch.zeros_like(deq)),)


def test_witness_mx_matches_torchao() -> None:
    assert_fails_on(_one_ulp_low, lambda q: test_mx_matches_torchao("mxfp8_e4m3", q))


def test_nvfp4_matches_torchao(
    quantize: Callable[..., tuple[torch.Tensor, ...]] = nvfp4_quantize,
) -> None:
    nv = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor")
    g = torch.Generator().manual_seed(4)
    x = torch.randn(16, 128, generator=g) * 3
    amax = x.abs().amax().float()
    per_tensor = amax / (6.0 * 448.0)
    t = nv.NVFP4Tensor.to_nvfp4(x, per_tensor_scale=per_tensor)
    want = t.dequantize(torch.float32)
    got = quantize(x)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def _nvfp4_one_ulp_low(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Known-bad: NVFP4's values one float32 ulp toward zero."""
    deq = nvfp4_quantize(x)[0]
    return (torch.nextafter(deq, torch.zeros_like(deq)),)


def test_witness_nvfp4_matches_torchao() -> None:
    assert_fails_on(_nvfp4_one_ulp_low, test_nvfp4_matches_torchao)
