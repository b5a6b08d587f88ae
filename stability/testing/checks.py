"""The judgements of ``stability.testing``'s assertions: a measured pass in, a message out.

Each ``*_message`` returns None when the check passes, else the one message its assertion
raises; the assertions and the pytest plugin's ``stability_check`` share them, so both fail
with the same words. Every message names the layer (``layer 2 of 5 (transformer.h.1:
GPT2Block)``) and the phase (forward or backward) where the check broke.
"""

import math
from collections.abc import Iterable

import torch
from torch import nn

from stability.core.dtypes import DTYPES, DType, get_dtype
from stability.core.probe import LayerStats
from stability.errors import StabilityError
from stability.testing.layers import ROOT, Layers

DEFAULT_BAND = (-1.0, 1.0)  # log10 of the variance ratio: within a factor of 10 of layer 1


def _list(layers: list[int]) -> str:
    return ", ".join(str(i) for i in layers) if layers else "none"


def _log10_ratio(value: float, reference: float) -> float:
    if not (math.isfinite(value) and math.isfinite(reference)) or reference <= 0:
        return math.nan
    return -math.inf if value <= 0 else math.log10(value / reference)


def check_band(band: tuple[float, float]) -> tuple[float, float]:
    """``band`` as two floats with lo <= 0 <= hi, or a StabilityError naming it."""
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


def overflow_dtype(dtype: str) -> DType:
    """The reduced dtype ``assert_no_overflow`` checks, or a StabilityError naming the choices."""
    target = get_dtype(dtype)
    if not target.reduced:
        reduced = sorted(n for n, d in DTYPES.items() if d.reduced)
        raise StabilityError(
            f"assert_no_overflow checks a reduced-precision dtype; got {dtype!r}; "
            f"expected one of {reduced}"
        )
    return target


def _fmt_log(log_ratio: float, value: float, reference: float) -> str:
    if math.isnan(log_ratio):
        return f"undefined (this layer's is {value:.3g}, layer 1's {reference:.3g})"
    if math.isinf(log_ratio):
        return f"0 (layer 1's is {reference:.3g})"
    return f"10^{log_ratio:+.2f} x layer 1's ({value:.3g} vs {reference:.3g})"


def variance_message(layers: Layers, band: tuple[float, float]) -> str | None:
    """Every layer's forward and backward variance within ``band`` (log10) of layer 1's."""
    lo, hi = check_band(band)
    stats = layers.stats
    first = stats[0]
    fwd = [_log10_ratio(s.act_var, first.act_var) for s in stats]
    bwd = [_log10_ratio(s.grad_var, first.grad_var) for s in stats]

    def outside(v: float) -> bool:
        return not lo <= v <= hi  # NaN is outside too

    bad_fwd = [s.layer for s, v in zip(stats, fwd, strict=True) if outside(v)]
    bad_bwd = [s.layer for s, v in zip(stats, bwd, strict=True) if outside(v)]
    if not bad_fwd and not bad_bwd:
        return None
    layer = min(bad_fwd + bad_bwd)
    i = layer - 1
    return (
        f"variance not preserved at {layers.label(layer)}: forward variance is "
        f"{_fmt_log(fwd[i], stats[i].act_var, first.act_var)}, backward (gradient) variance is "
        f"{_fmt_log(bwd[i], stats[i].grad_var, first.grad_var)}; allowed 10^[{lo:+.2f}, "
        f"{hi:+.2f}] x layer 1's. Layers outside the band: forward {_list(bad_fwd)}; "
        f"backward {_list(bad_bwd)}."
    )


def _forward_nonfinite(layers: Layers) -> list[int]:
    """Layers whose output held an inf or NaN (max |x| is inf or NaN then)."""
    return [
        s.layer for s, ran in zip(layers.stats, layers.ran, strict=True)
        if ran and not math.isfinite(s.act_max_abs)
    ]  # fmt: skip


def _kind(value: float) -> str:
    return "NaN" if math.isnan(value) else "inf"


def _below_max(stats: list[LayerStats], layer: int) -> str:
    return "n/a (input)" if layer == 1 else f"{stats[layer - 2].act_max_abs:.3g}"


def _nonfinite(t: torch.Tensor | None) -> int:
    return 0 if t is None else int((~torch.isfinite(t.detach())).sum())


def _output_message(layers: Layers, what: str) -> str:
    return (
        f"{what} in the forward pass at the model's output ({ROOT}: {layers.output_kind}): "
        f"{layers.output_nonfinite} non-finite values, though every watched layer's output "
        f"was finite (the model's own code between its modules made them)"
    )


def finite_message(layers: Layers, model: nn.Module) -> str | None:
    """Every layer output, output gradient and parameter gradient finite.

    A non-finite forward value is reported at the first layer where it appears (the
    gradients below cannot be finite then). Otherwise the backward pass is blamed where it
    starts: it runs from the top layer down, so the highest layer with a non-finite gradient
    (at its output or in its parameters) is where it broke; the layers under it inherit it.
    """
    stats = layers.stats
    forward_bad = _forward_nonfinite(layers)
    if forward_bad:
        layer = forward_bad[0]
        return (
            f"non-finite forward values at {layers.label(layer)}: its output holds "
            f"{_kind(stats[layer - 1].act_max_abs)} (forward pass), so no gradient can be "
            f"finite; max |output| of the layer below: {_below_max(stats, layer)}. "
            f"Layers with non-finite outputs: {_list(forward_bad)}."
        )
    if layers.output_nonfinite:
        return _output_message(layers, "non-finite values")
    param_bad = [sum(_nonfinite(p.grad) for p in ps) for ps in layers.params]
    grad_bad = [s.nonfinite for s in stats]  # forward is finite: these are gradient values
    bad = [s.layer for s, g, p in zip(stats, grad_bad, param_bad, strict=True) if g or p]
    if bad:
        layer = bad[-1]
        i = layer - 1
        return (
            f"non-finite gradient at {layers.label(layer)} (backward pass): {grad_bad[i]} "
            f"non-finite values in the gradient at its output and {param_bad[i]} in its "
            f"parameter gradients (backward runs from layer {len(stats)} down, so it starts "
            f"here). Layers with non-finite gradients: {_list(bad)}."
        )
    return _outside_message(layers, model.named_parameters())


def _outside_message(layers: Layers, named: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """Non-finite gradients in parameters no watched layer holds (``named_parameters``)."""
    watched = {id(p) for ps in layers.params for p in ps}
    others = [n for n, p in named if id(p) not in watched and _nonfinite(p.grad)]
    if not others:
        return None
    return (
        f"non-finite gradient (backward pass) in parameters outside the watched layers: "
        f"{', '.join(others)}"
    )


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.3g}%"


def _forward_what(s: LayerStats, target: DType) -> str:
    if math.isfinite(s.act_max_abs):
        return (
            f"{_pct(s.overflow_frac)} of its outputs exceed {target.max:.6g} (largest |value| "
            f"{s.act_max_abs:.3g}, {s.act_max_abs / target.max:.3g}x the limit)"
        )
    what = f"its output holds {_kind(s.act_max_abs)} values before any rounding"
    if s.overflow_frac > 0:
        what += f", and {_pct(s.overflow_frac)} of its finite outputs exceed {target.max:.6g}"
    return what + f"; {target.name} cannot hold them either"


def overflow_message(layers: Layers, dtype: str) -> str | None:
    """No layer output or output gradient beyond ``dtype``'s range, none inf or NaN.

    The first layer of the forward pass that overflows (or already holds an inf or NaN) is
    reported; if only gradients do, the highest such layer (where the backward pass, running
    from the top, first overflows).
    """
    target = overflow_dtype(dtype)
    stats = layers.stats
    nonfinite = set(_forward_nonfinite(layers))
    fwd = [s.layer for s in stats if s.overflow_frac > 0 or s.layer in nonfinite]
    readable = not nonfinite and not layers.output_nonfinite  # else every gradient is lost
    param_bad = [sum(_nonfinite(p.grad) for p in ps) if readable else 0 for ps in layers.params]
    bwd = [
        s.layer for s, p in zip(stats, param_bad, strict=True)
        if s.grad_overflow_frac > 0 or (readable and (s.nonfinite > 0 or p > 0))
    ]  # fmt: skip
    if not fwd and not bwd:
        return _output_message(layers, f"{dtype} overflow") if layers.output_nonfinite else None
    if fwd:
        layer = fwd[0]
        phase, what = "forward", _forward_what(stats[layer - 1], target)
    else:
        layer = bwd[-1]
        s = stats[layer - 1]
        phase = "backward"
        if s.nonfinite or param_bad[layer - 1]:
            what = (
                f"{s.nonfinite} values of the gradient at its output and "
                f"{param_bad[layer - 1]} of its parameter gradients are inf or NaN before any "
                f"rounding (the backward pass breaks here first)"
            )
        else:
            what = (
                f"{_pct(s.grad_overflow_frac)} of the gradient at its output exceeds "
                f"{target.max:.6g} (the backward pass overflows here first)"
            )
    return (
        f"{dtype} overflow in the {phase} pass at {layers.label(layer)}: {what}. Layers that "
        f"overflow: forward {_list(fwd)}; backward {_list(bwd)}."
    )
