"""Hypothesis strategies and assertions for checking the numerics of your own models.

Strategies draw the project's names and configs, so a property over "any activation, any
init" is one decorator away::

    @given(stability.testing.mlp_configs(max_depth=6, max_width=32))
    def test_my_training_step(config): ...

Assertions run one forward and backward pass through ``stability.core.probe.probe`` (a fixed random
projection of the output is the loss, so the gradient entering the top has variance 1) and
fail with a message that names the first broken layer and how far off it is::

    assert_variance_preserved(model, x, band=(-1, 1))  # within 10x of layer 1, both ways
    assert_gradients_finite(model, x)
    assert_no_overflow(model, x, dtype="float16")

A "layer" is a watched module: by default every ``nn.Linear`` in registration order (its
output is the layer output), or the blocks of a ``stability.core.model.MLP``; pass ``modules=`` to
watch others (for example the activations). Layers are numbered from 1 at the input. The
probe clears the model's ``.grad`` first and leaves the gradients of its own pass there; it
does not change train/eval mode: call ``model.eval()`` first if dropout would make the
check random.

Strategies need hypothesis (``pip install 'stability[test]'``); the assertions do not.
"""

import math
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import nn

from stability.core.activations import ACTIVATIONS
from stability.core.config import MLPConfig
from stability.core.dtypes import DTYPES, get_dtype
from stability.core.inits import INITS
from stability.core.model import MLP
from stability.core.probe import LayerStats, probe
from stability.errors import StabilityError

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

__all__ = [
    "activations",
    "assert_gradients_finite",
    "assert_no_overflow",
    "assert_variance_preserved",
    "dtypes",
    "inits",
    "mlp_configs",
]

MAX_SEED = 2**32 - 1
DEFAULT_BAND = (-1.0, 1.0)  # log10 of the variance ratio: within a factor of 10 of layer 1


# -- strategies ----------------------------------------------------------------------------


def _strategies() -> ModuleType:
    """hypothesis.strategies, imported on first use so the assertions work without it."""
    try:
        from hypothesis import strategies
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "stability.testing strategies need hypothesis: pip install 'stability[test]'"
        ) from exc
    return strategies


def _names_from(kind: str, table: Iterable[str], chosen: Iterable[str] | None) -> list[str]:
    valid = sorted(table)
    names = valid if chosen is None else list(chosen)
    for name in names:
        if name not in valid:
            raise StabilityError(f"unknown {kind} {name!r}; expected one of {valid}")
    if not names:
        raise StabilityError(f"no {kind} to draw from; expected one or more of {valid}")
    return names


def activations(names: Iterable[str] | None = None) -> "SearchStrategy[str]":
    """An activation name from the registry (all of them, or the ``names`` given)."""
    st = _strategies()
    strategy: SearchStrategy[str] = st.sampled_from(_names_from("activation", ACTIVATIONS, names))
    return strategy


def inits(names: Iterable[str] | None = None, data_driven: bool = True) -> "SearchStrategy[str]":
    """An init name from the registry; ``data_driven=False`` leaves out LSUV (it runs a batch)."""
    chosen = _names_from("init", INITS, names)
    if not data_driven:
        chosen = [n for n in chosen if not INITS[n].data_driven]
    st = _strategies()
    strategy: SearchStrategy[str] = st.sampled_from(_names_from("init", INITS, chosen))
    return strategy


def dtypes(
    names: Iterable[str] | None = None, reduced: bool | None = None
) -> "SearchStrategy[str]":
    """A dtype name; ``reduced=True`` for float16/bfloat16 only, ``False`` for the others."""
    chosen = _names_from("dtype", DTYPES, names)
    if reduced is not None:
        chosen = [n for n in chosen if DTYPES[n].reduced == reduced]
    st = _strategies()
    strategy: SearchStrategy[str] = st.sampled_from(_names_from("dtype", DTYPES, chosen))
    return strategy


def _check_range(name: str, low: int, high: int) -> None:
    if isinstance(low, bool) or isinstance(high, bool) or low < 1 or high < low:
        raise StabilityError(f"{name} range must satisfy 1 <= min <= max, got {low}..{high}")


def mlp_configs(
    max_depth: int = 8,
    max_width: int = 64,
    *,
    min_depth: int = 1,
    min_width: int = 1,
    activation: "SearchStrategy[str] | None" = None,
    init: "SearchStrategy[str] | None" = None,
    dtype: "SearchStrategy[str] | None" = None,
    device: str = "cpu",
) -> "SearchStrategy[MLPConfig]":
    """An ``MLPConfig`` with depth and width in range, drawn from the piece strategies.

    ``activation``, ``init`` and ``dtype`` default to ``activations()``, ``inits()`` and
    ``dtypes()``; pass narrower ones (``st.just("relu")``) to pin a piece. Bias and seed are
    drawn too; shrinking goes towards shallow, narrow, seed-0 configs.
    """
    _check_range("depth", min_depth, max_depth)
    _check_range("width", min_width, max_width)
    st = _strategies()
    pieces = (
        activation if activation is not None else activations(),
        init if init is not None else inits(),
        dtype if dtype is not None else dtypes(),
    )

    strategy: SearchStrategy[MLPConfig] = st.builds(
        MLPConfig,
        depth=st.integers(min_value=min_depth, max_value=max_depth),
        width=st.integers(min_value=min_width, max_value=max_width),
        activation=pieces[0],
        init=pieces[1],
        dtype=pieces[2],
        bias=st.booleans(),
        seed=st.integers(min_value=0, max_value=MAX_SEED),
        device=st.just(device),
    )
    return strategy


# -- assertions ------------------------------------------------------------------------------


def _watched_modules(model: nn.Module, modules: Sequence[nn.Module] | None) -> list[nn.Module]:
    """The layers ``probe`` watches, in its order."""
    if isinstance(model, MLP):
        return list(model.layers)
    if modules is not None:
        return list(modules)
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def _layer_names(model: nn.Module, modules: Sequence[nn.Module] | None) -> list[str]:
    """How to name each watched layer in a message: its attribute path in ``model``."""
    watched = _watched_modules(model, modules)
    by_id = {id(m): name for name, m in model.named_modules()}
    return [f"{by_id.get(id(m), '?')!s}: {type(m).__name__}" for m in watched]


def _where(names: list[str], layer: int) -> str:
    return f"layer {layer} of {len(names)} ({names[layer - 1]})"


def _list(layers: list[int]) -> str:
    return ", ".join(str(i) for i in layers) if layers else "none"


def _log10_ratio(value: float, reference: float) -> float:
    if not (math.isfinite(value) and math.isfinite(reference)) or reference <= 0:
        return math.nan
    return -math.inf if value <= 0 else math.log10(value / reference)


def _check_band(band: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in band)
    except (TypeError, ValueError):
        raise StabilityError(f"band must be (lo, hi) in log10 units, got {band!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= 0.0 <= hi):
        raise StabilityError(
            f"band must be (lo, hi) in log10 units with lo <= 0 <= hi "
            f"(layer 1's own ratio is 10^0), got {band!r}"
        )
    return lo, hi


def assert_variance_preserved(
    model: nn.Module,
    x: torch.Tensor,
    band: tuple[float, float] = DEFAULT_BAND,
    modules: Sequence[nn.Module] | None = None,
) -> None:
    """Every layer's forward and backward variance stays within ``band`` of layer 1's.

    ``band = (lo, hi)`` is in log10 units: ``(-1, 1)`` allows each layer's output variance
    (and the variance of the gradient at its output) to be 10x smaller to 10x larger than
    layer 1's. Variance compounds multiplicatively with depth, so a log scale is the fair
    one. Raises AssertionError naming the first layer outside the band and its log10 ratio.
    Finite width fluctuates: a width-256 layer's variance can sit 10-30 % off, so keep the
    band wider than that noise times sqrt(depth).
    """
    lo, hi = _check_band(band)
    stats = probe(model, x, modules=modules)
    names = _layer_names(model, modules)
    first = stats[0]
    fwd = [_log10_ratio(s.act_var, first.act_var) for s in stats]
    bwd = [_log10_ratio(s.grad_var, first.grad_var) for s in stats]

    def outside(v: float) -> bool:
        return not lo <= v <= hi  # NaN is outside too

    bad_fwd = [s.layer for s, v in zip(stats, fwd, strict=True) if outside(v)]
    bad_bwd = [s.layer for s, v in zip(stats, bwd, strict=True) if outside(v)]
    if not bad_fwd and not bad_bwd:
        return
    layer = min(bad_fwd + bad_bwd)
    i = layer - 1
    message = (
        f"variance not preserved at {_where(names, layer)}: forward variance is "
        f"{_fmt_log(fwd[i], stats[i].act_var, first.act_var)}, backward (gradient) variance is "
        f"{_fmt_log(bwd[i], stats[i].grad_var, first.grad_var)}; allowed 10^[{lo:+.2f}, "
        f"{hi:+.2f}] x layer 1's. Layers outside the band: forward {_list(bad_fwd)}; "
        f"backward {_list(bad_bwd)}."
    )
    raise AssertionError(message)


def _fmt_log(log_ratio: float, value: float, reference: float) -> str:
    if math.isnan(log_ratio):
        return f"undefined (this layer's is {value:.3g}, layer 1's {reference:.3g})"
    if math.isinf(log_ratio):
        return f"0 (layer 1's is {reference:.3g})"
    return f"10^{log_ratio:+.2f} x layer 1's ({value:.3g} vs {reference:.3g})"


def _nonfinite(t: torch.Tensor | None) -> int:
    return 0 if t is None else int((~torch.isfinite(t.detach())).sum())


def assert_gradients_finite(
    model: nn.Module, x: torch.Tensor, modules: Sequence[nn.Module] | None = None
) -> None:
    """One forward/backward pass leaves every activation, gradient and parameter grad finite.

    A non-finite forward value is reported at the first layer where it appears (the
    gradients below cannot be finite then). Otherwise the backward pass is blamed where it
    starts: it runs from the top layer down, so the highest layer with a non-finite gradient
    (at its output or in its parameters) is where it broke; the layers under it inherit it.
    """
    stats = probe(model, x, modules=modules)
    names = _layer_names(model, modules)
    forward_bad = [s.layer for s in stats if not math.isfinite(s.act_max_abs)]
    if forward_bad:
        layer = forward_bad[0]
        raise AssertionError(
            f"non-finite forward values at {_where(names, layer)}, so no gradient can be "
            f"finite; max |output| of the layer below: {_below_max(stats, layer)}. "
            f"Layers with non-finite outputs: {_list(forward_bad)}."
        )
    watched = _watched_modules(model, modules)
    param_bad = [sum(_nonfinite(p.grad) for p in m.parameters()) for m in watched]  # per layer
    grad_bad = [s.nonfinite for s in stats]  # forward is finite: these are gradient values
    bad = [s.layer for s, g, p in zip(stats, grad_bad, param_bad, strict=True) if g or p]
    if bad:
        layer = bad[-1]
        i = layer - 1
        raise AssertionError(
            f"non-finite gradient at {_where(names, layer)}: {grad_bad[i]} non-finite values "
            f"in the gradient at its output and {param_bad[i]} in its parameter gradients "
            f"(backward runs from layer {len(stats)} down, so it starts here). "
            f"Layers with non-finite gradients: {_list(bad)}."
        )
    watched_ids = {id(p) for m in watched for p in m.parameters()}
    others = [
        name
        for name, p in model.named_parameters()
        if id(p) not in watched_ids and _nonfinite(p.grad)
    ]
    if others:
        raise AssertionError(
            f"non-finite gradient in parameters outside the watched layers: {', '.join(others)}"
        )


def _below_max(stats: list[LayerStats], layer: int) -> str:
    return "n/a (input)" if layer == 1 else f"{stats[layer - 2].act_max_abs:.3g}"


def assert_no_overflow(
    model: nn.Module,
    x: torch.Tensor,
    dtype: str = "float16",
    modules: Sequence[nn.Module] | None = None,
) -> None:
    """No layer output or output gradient would overflow if stored in ``dtype``.

    Works on a float32 model (it counts the values beyond ``dtype``'s largest finite value,
    that a float16/bfloat16 run would turn into inf) and on emulated or native
    reduced-precision models. The first overflowing layer in the forward pass is reported; if
    only gradients overflow, the highest such layer (where the backward pass first overflows).
    """
    target = get_dtype(dtype)
    if not target.reduced:
        reduced = sorted(n for n, d in DTYPES.items() if d.reduced)
        raise StabilityError(
            f"assert_no_overflow checks a reduced-precision dtype; got {dtype!r}; "
            f"expected one of {reduced}"
        )
    stats = probe(model, x, modules=modules, precision=dtype)
    names = _layer_names(model, modules)
    fwd = [s.layer for s in stats if s.overflow_frac > 0 or math.isinf(s.act_max_abs)]
    bwd = [s.layer for s in stats if s.grad_overflow_frac > 0]
    if not fwd and not bwd:
        return
    if fwd:
        s = stats[fwd[0] - 1]
        what = (
            f"{_pct(s.overflow_frac)} of its outputs exceed {target.max:.6g} "
            f"(largest |value| {s.act_max_abs:.3g}, {s.act_max_abs / target.max:.3g}x the limit)"
        )
        layer = fwd[0]
    else:
        layer = bwd[-1]
        s = stats[layer - 1]
        what = (
            f"{_pct(s.grad_overflow_frac)} of the gradient at its output exceeds "
            f"{target.max:.6g} (the backward pass overflows here first)"
        )
    raise AssertionError(
        f"{dtype} overflow at {_where(names, layer)}: {what}. Layers that overflow: forward "
        f"{_list(fwd)}; backward {_list(bwd)}."
    )


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.3g}%"
