"""Per-layer forward and backward statistics of any ``nn.Module``, collected through hooks.

For the project's ``MLP`` a layer is one block: its pre-activation is the Linear's output and
its output the block's (after rounding, when reduced precision is emulated). For any other
model the caller names the modules to watch (default: every ``nn.Linear``); each watched
module's output is that layer's output, and the pre-activation columns are NaN.

The backward pass uses a fixed random projection ``loss = sum(out * R)`` with ``R ~ N(0, 1)``,
so the gradient entering the top layer has variance exactly 1 in expectation, and the
gradient variance at layer ``l`` is the product of the per-layer factors above it.

The hooks reduce each tensor to a handful of scalars on its own device and keep no copy
of any activation; off the CPU nothing is synchronised with the host until
``results()`` (on CPU, where reading a scalar is free, the arithmetic is on floats). Non-finite
values are counted, never raised.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from stability.core.dtypes import DType, get_dtype
from stability.core.emulation import precision_event_counts, round_to
from stability.core.model import MLP, MLPBlock

PROJECTION_SEED = 12_345
MOMENT_ONE_PASS_LIMIT = 0.5  # one-pass variance only while mean^2 <= this * E[x^2]

# Slots of the per-layer scalar vector kept on device during a pass.
_FWD = ("act_mean", "act_var", "act_max_abs", "nonfinite", "overflow", "subnormal", "flush")
_PRE = ("preact_mean", "preact_var")
_BWD = ("grad_var", "grad_nonfinite", "grad_overflow", "grad_subnormal", "grad_flush")


@dataclass(frozen=True)
class LayerStats:
    """What the probe measured at one layer.

    Precision fractions are per element of the layer's output (batch x width). Emulated: the
    larger of the fractions that the pre-activation and the output rounding damaged at this
    layer. Native: the
    damaged values present in the output (inf also counts infs carried from below; flush to
    zero cannot be seen natively and stays 0).
    """

    layer: int
    preact_mean: float
    preact_var: float
    act_mean: float
    act_var: float
    act_max_abs: float
    grad_var: float
    weight_grad_var: float
    nonfinite: int  # non-finite values in the layer output plus its gradient
    overflow_frac: float
    subnormal_frac: float
    flush_frac: float
    grad_overflow_frac: float
    grad_subnormal_frac: float
    grad_flush_frac: float

    @classmethod
    def columns(cls) -> list[str]:
        """Field names, once, in order: the probe's part of a result row."""
        return [f.name for f in fields(cls)]

    def as_dict(self) -> dict[str, Any]:
        # Shallow: every field is a number, and ``dataclasses.asdict``'s deep copy was a
        # tenth of a sweep's time (2,000 calls, 1.1 s of 11.8 s, issue 27).
        return {name: getattr(self, name) for name in _LAYER_FIELDS}


_LAYER_FIELDS = tuple(f.name for f in fields(LayerStats))


def _flat(x: torch.Tensor) -> torch.Tensor:
    # Reduce in at least float32 (float16 sums overflow), but never lose float64's range.
    x = x.detach()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x.reshape(-1)


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (biased) variance on x's device: two passes, the second a BLAS dot.

    Not torch.var_mean: its full reduction is about 15x slower on CPU (4.2 ms vs 0.3 ms
    for a 256x512 float32 tensor) and was most of the probe's cost.
    """
    flat = _flat(x)
    n = flat.numel()
    if n == 0:
        var, mean = torch.var_mean(flat, correction=0)
        return mean, var
    mean = flat.sum() / n
    dev = flat - mean
    return mean, torch.dot(dev, dev) / n


def _summary(x: torch.Tensor, extremes: bool) -> torch.Tensor:
    """``[mean, var, max_abs, nonfinite]`` of ``x`` (max_abs NaN unless ``extremes``).

    On CPU, where reading a scalar costs nothing, the arithmetic is done on Python floats:
    the dozen tiny tensor ops per hook cost as much as the reductions themselves.
    Elsewhere everything stays on the device (no host sync until ``results()``).
    """
    flat = _flat(x)
    if flat.device.type != "cpu":
        mean, var = _moments(flat)
        max_abs = flat.abs().amax() if extremes else torch.full_like(mean, math.nan)
        nonfinite = (~torch.isfinite(flat)).sum()
        return torch.stack([mean, var, max_abs.to(mean.dtype), nonfinite.to(mean.dtype)])
    return torch.tensor(_host_summary(flat, extremes), dtype=torch.float64)


def one_pass_safe(mean: float, sq: float) -> bool:
    """Whether the one-pass variance ``E[x^2] - mean^2`` may stand, from ``mean`` and
    ``sq = E[x^2]``. It loses digits only where mean^2 is large against the variance: kept
    while mean^2 <= E[x^2] / 2 (relative error then at most twice that of E[x^2]) and E[x^2]
    is finite, else the two-pass value is taken."""
    return math.isfinite(sq) and mean * mean <= MOMENT_ONE_PASS_LIMIT * sq


def _host_summary(flat: torch.Tensor, extremes: bool) -> list[float]:
    n = flat.numel()
    if n == 0:
        return [math.nan, math.nan, math.nan, 0.0]
    total = float(flat.sum())
    mean = total / n
    sq = float(torch.dot(flat, flat)) / n
    var = sq - mean * mean if one_pass_safe(mean, sq) else float(_moments(flat)[1])
    max_abs = float(flat.abs().amax()) if extremes else math.nan
    # A finite sum means every element is finite (one NaN or inf makes the sum NaN or
    # inf), so the count (isfinite then a sum, ~2 ms for 256x512 on CPU) runs only if not.
    nonfinite = 0.0 if math.isfinite(total) else float((~torch.isfinite(flat)).sum())
    return [mean, var, max_abs, nonfinite]


class Probe:
    """Attach to a model, run forward/backward passes, read per-layer statistics.

    ``every`` records only every N-th forward pass (for cheap monitoring inside training).
    ``precision`` names the reduced dtype whose overflow/subnormal/flush to count; by
    default it is the MLP config's dtype, or the output dtype of a native-precision model.
    """

    def __init__(
        self,
        model: nn.Module,
        modules: Sequence[nn.Module] | None = None,
        precision: str | None = None,
        every: int = 1,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.model = model
        self.every = every
        self._calls = 0
        self._recording = False
        self._handles: list[RemovableHandle] = []
        if isinstance(model, MLP):
            self._layers: list[nn.Module] = list(model.layers)
            self._preacts: list[nn.Module | None] = [b.linear for b in model.layers]
            self._weights: list[torch.Tensor | None] = [b.linear.weight for b in model.layers]
            precision = precision or model.config.dtype
        else:
            watched: list[nn.Module] = []
            if modules is not None:
                watched.extend(modules)
            else:
                watched.extend(m for m in model.modules() if isinstance(m, nn.Linear))
            if not watched:
                raise ValueError("no modules to watch: the model has no nn.Linear; pass modules=")
            self._layers = watched
            self._preacts = [None] * len(watched)
            self._weights = [_weight_of(m) for m in watched]
        self.precision: DType | None = get_dtype(precision) if precision else None
        if self.precision is not None and not self.precision.reduced:
            self.precision = None
        # Per layer: plain floats on CPU, a device tensor elsewhere (read in results()).
        self._fwd: dict[int, torch.Tensor | list[float]] = {}
        self._pre: dict[int, torch.Tensor | list[float]] = {}
        self._bwd: dict[int, torch.Tensor | list[float]] = {}
        self._elements: dict[int, int] = {}
        self._fwd_events: dict[int, torch.Tensor] = {}

    # -- hooks ---------------------------------------------------------------------------
    def _events(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision is None:
            return torch.zeros(3, device=x.device)
        return precision_event_counts(x.detach(), self.precision).float()

    def _host_events(self, x: torch.Tensor, counted: torch.Tensor | None) -> list[float]:
        """(overflow, subnormal, flush) counts as floats; free when nothing is reduced."""
        if counted is not None:
            return [float(v) for v in counted.tolist()]
        if self.precision is None:
            return [0.0, 0.0, 0.0]
        return [float(v) for v in self._events(x).tolist()]

    def _round(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision is None or x.dtype == self.precision.dtype:
            return x
        return round_to(x.detach(), self.precision.dtype)

    def _on_output(self, index: int, out: torch.Tensor) -> None:
        if not self._recording or not isinstance(out, torch.Tensor):
            return
        x = out.detach()
        # The block output is already rounded: events are judged on the unrounded value,
        # which the activation hook (emulation) stored, or on this tensor (native).
        events = self._fwd_events.pop(index, None)
        if x.device.type == "cpu":  # plain floats: no small tensors to build per hook
            head_values = _host_summary(_flat(x), extremes=True)
            self._fwd[index] = head_values + self._host_events(x, events)
        else:
            head = _summary(x, extremes=True)
            if events is None:
                events = self._events(x)
            self._fwd[index] = torch.cat([head, events.to(device=head.device, dtype=head.dtype)])
        self._elements[index] = x.numel()
        if out.requires_grad:
            out.register_hook(lambda g, i=index: self._on_grad(i, g))  # type: ignore[no-untyped-call]

    def _on_grad(self, index: int, grad: torch.Tensor) -> None:
        g = grad.detach()
        rounded = self._round(g)
        if g.device.type == "cpu":
            values = _host_summary(_flat(rounded), extremes=False)
            if rounded is not g:  # non-finite values are counted on the gradient as it arrived
                values[3] = float((~torch.isfinite(g)).sum())
            self._bwd[index] = [values[1], values[3], *self._host_events(g, None)]
            return
        events = self._events(g)
        s = _summary(rounded, extremes=False)
        if rounded is not g:  # non-finite values are counted on the gradient as it arrived
            s[3] = (~torch.isfinite(g)).sum()
        parts = [s[1:2], s[3:4], events.to(device=s.device, dtype=s.dtype)]
        self._bwd[index] = torch.cat(parts)

    def _on_preact(self, index: int, out: torch.Tensor) -> None:
        if not self._recording:
            return
        x = self._round(out.detach())
        if x.device.type == "cpu":
            self._pre[index] = _host_summary(_flat(x), extremes=False)[:2]
        else:
            self._pre[index] = _summary(x, extremes=False)[:2]

    def _on_unrounded(self, index: int, out: torch.Tensor) -> None:
        # Emulated blocks round twice (pre-activation and output), both tensors batch x width.
        # The layer reports, per kind of event, the larger of the two counts: overflow at the
        # pre-activation shows there (the output then holds inf, not "finite before"), while
        # a tiny value can go subnormal at both roundings and must not count twice.
        if self._recording:
            events = self._events(out)
            previous = self._fwd_events.get(index)
            self._fwd_events[index] = (
                events if previous is None else torch.maximum(previous, events)
            )

    def _on_model_forward(self, *_: Any) -> None:
        self._recording = self._calls % self.every == 0
        self._calls += 1
        if self._recording:
            for store in (self._fwd, self._pre, self._bwd, self._fwd_events):
                store.clear()

    def attach(self) -> "Probe":
        """Register the hooks; ``detach()`` (or the context manager) removes them."""
        self._handles.append(self.model.register_forward_pre_hook(self._on_model_forward))
        for i, layer in enumerate(self._layers):
            self._handles.append(
                layer.register_forward_hook(lambda m, a, out, i=i: self._on_output(i, out))
            )
            pre = self._preacts[i]
            if pre is not None:
                self._handles.append(
                    pre.register_forward_hook(lambda m, a, out, i=i: self._on_preact(i, out))
                )
            if isinstance(layer, MLPBlock) and layer.round_dtype is not None:
                for rounded_after in (layer.linear, layer.activation):
                    self._handles.append(
                        rounded_after.register_forward_hook(
                            lambda m, a, out, i=i: self._on_unrounded(i, out)
                        )
                    )
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> "Probe":
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    # -- results -------------------------------------------------------------------------
    def results(self) -> list[LayerStats]:
        """Statistics of the last recorded pass, one entry per watched layer, 1-based."""
        nan = math.nan
        rows = []
        for i in range(len(self._layers)):
            fwd = _values(self._fwd.get(i), len(_FWD))
            pre = _values(self._pre.get(i), len(_PRE))
            bwd = _values(self._bwd.get(i), len(_BWD))
            weight = self._weights[i]
            wgv = nan
            if weight is not None and weight.grad is not None:
                wgv = self._weight_grad_var(weight.grad)
            n = self._elements.get(i, 0) or 1
            rows.append(layer_stats(i + 1, fwd, pre, bwd, wgv, n))
        return rows

    def _weight_grad_var(self, grad: torch.Tensor) -> float:
        return float(_moments(grad)[1])


def layer_stats(
    layer: int,
    fwd: Sequence[float],
    pre: Sequence[float],
    bwd: Sequence[float],
    weight_grad_var: float,
    n: int,
) -> LayerStats:
    """One layer's ``LayerStats`` from its reduced slots (``_FWD``, ``_PRE``, ``_BWD`` order)
    and its element count: the one place a slot is given its meaning, for every probe path."""
    return LayerStats(
        layer=layer,
        preact_mean=pre[0],
        preact_var=pre[1],
        act_mean=fwd[0],
        act_var=fwd[1],
        act_max_abs=fwd[2],
        grad_var=bwd[0],
        weight_grad_var=weight_grad_var,
        nonfinite=int(_nan_to_zero(fwd[3]) + _nan_to_zero(bwd[1])),
        overflow_frac=fwd[4] / n,
        subnormal_frac=fwd[5] / n,
        flush_frac=fwd[6] / n,
        grad_overflow_frac=bwd[2] / n,
        grad_subnormal_frac=bwd[3] / n,
        grad_flush_frac=bwd[4] / n,
    )


def _values(stored: torch.Tensor | list[float] | None, n: int) -> list[float]:
    """A layer's stored slots as floats: device tensors are read here, once; absent is NaN."""
    if stored is None:
        return [math.nan] * n
    return stored.tolist() if isinstance(stored, torch.Tensor) else stored


def _weight_of(module: nn.Module) -> torch.Tensor | None:
    weight = getattr(module, "weight", None)
    return weight if isinstance(weight, torch.Tensor) else None


def _nan_to_zero(v: float) -> float:
    return 0.0 if math.isnan(v) else v


def projection_loss(out: torch.Tensor, seed: int = PROJECTION_SEED) -> torch.Tensor:
    """``sum(out * R)`` with a fixed ``R ~ N(0, 1)``: the gradient entering the top is ``R``."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(out.shape, generator=gen).to(device=out.device, dtype=out.dtype)
    return (out * r).sum()


def probe(
    model: nn.Module,
    x: torch.Tensor,
    modules: Sequence[nn.Module] | None = None,
    precision: str | None = None,
) -> list[LayerStats]:
    """One forward and backward pass of ``x`` through ``model``; per-layer statistics.

    Gradients are zeroed first and left in place afterwards (``weight.grad``).
    """
    model.zero_grad(set_to_none=True)
    with Probe(model, modules=modules, precision=precision) as p:
        out = model(x)
        if out.requires_grad:
            projection_loss(out).backward()  # type: ignore[no-untyped-call]
        return p.results()
