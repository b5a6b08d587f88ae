"""The probe's per-layer statistics for modules whose output is not one tensor, pooled.

``core.probe.Probe`` reads one tensor per layer (an MLP block, an ``nn.Linear``) and keeps
the last call's. A user's modules return tuples (attention: its output and weights), dicts,
dataclasses and Hugging Face ``ModelOutput``s, and some run more than once in a pass (an
embedding shared by an encoder and a decoder). ``PooledProbe`` reads each output through
``read``, a function from the output to its tensors (``core.outputs.tensors_in``:
the ground floor imports nothing above it, so the caller passes it), and pools every
tensor of every call in the recorded pass, forward and the gradient arriving back at each,
into the same ``LayerStats`` slots: moments by Chan's combination, max |x| as the largest
(NaN if any is NaN), counts summed. One tensor seen once gives exactly ``Probe``'s numbers.

With ``entry=True`` layer 0 is the first floating tensor *given to* ``modules[0]`` (pass
that module twice, first and second): the residual stream entering a stack of blocks.

It also keeps the order in which the layers first produced an output (``order``): the
forward order, which registration order is not in a network whose modules are declared in
one place and called in another.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from stability.core.probe import LayerStats, Probe, _flat, _host_summary, _summary

Reader = Callable[[Any], list[torch.Tensor]]
# A part: the element count and the slots of one tensor: forward (mean, var, max_abs,
# nonfinite, overflow, subnormal, flush); backward the same without max_abs.
_Part = tuple[int, "list[float] | torch.Tensor"]


def _pool(parts: list[_Part], has_max: bool) -> tuple[int, list[float]]:
    """Total elements and pooled slots (moments by Chan's combination, counts summed)."""
    rows = [(n, s.tolist() if isinstance(s, torch.Tensor) else s) for n, s in parts]
    if len(rows) == 1:
        return rows[0]
    total, mean, m2 = 0, 0.0, 0.0
    for n, s in rows:
        both = total + n
        delta = s[0] - mean
        m2 += s[1] * n + delta * delta * total * n / both
        mean += delta * n / both
        total = both
    start = 2
    pooled = [mean, m2 / total]
    if has_max:
        highs = [s[2] for _, s in rows]
        pooled.append(math.nan if any(math.isnan(h) for h in highs) else max(highs))
        start = 3
    counts = [sum(s[k] for _, s in rows) for k in range(start, len(rows[0][1]))]
    return total, pooled + counts


class PooledProbe(Probe):
    """``Probe`` over the given modules, reading each output through ``read`` and pooling.

    Not for the project's ``MLP`` (its blocks are one tensor each: use ``Probe``).
    """

    def __init__(
        self,
        model: nn.Module,
        modules: Sequence[nn.Module],
        read: Reader,
        precision: str | None = None,
        every: int = 1,
        entry: bool = False,
    ) -> None:
        super().__init__(model, modules=modules, precision=precision, every=every)
        self.read = read
        self.entry = entry
        if entry:  # layer 0 is the input of modules[0] (given twice), not its output
            self._weights[0] = None
        self._fwd_parts: dict[int, list[_Part]] = {}
        self._bwd_parts: dict[int, list[_Part]] = {}
        self._first: dict[int, None] = {}  # layer indices, in order of their first output

    @property
    def order(self) -> list[int]:
        """0-based layer indices in the order they first produced an output this pass."""
        return list(self._first)

    def _on_model_forward(self, *args: Any) -> None:
        super()._on_model_forward(*args)
        if self._recording:
            for store in (self._fwd_parts, self._bwd_parts, self._first):
                store.clear()

    def _on_output(self, index: int, out: Any) -> None:
        if not self._recording:
            return
        self._first.setdefault(index, None)
        for t in self.read(out):
            if t.numel() == 0:
                continue
            self._fwd_parts.setdefault(index, []).append((t.numel(), self._forward_slots(t)))
            if t.requires_grad:
                t.register_hook(lambda g, i=index: self._on_grad(i, g))  # type: ignore[no-untyped-call]

    def attach(self) -> "PooledProbe":
        """Hooks on the modules' outputs (layer 0 on its input, with ``entry``)."""
        self._handles.append(self.model.register_forward_pre_hook(self._on_model_forward))
        for i, layer in enumerate(self._layers):
            if i == 0 and self.entry:
                self._handles.append(
                    layer.register_forward_pre_hook(self._on_entry, with_kwargs=True)
                )
                continue
            self._handles.append(
                layer.register_forward_hook(lambda m, a, out, i=i: self._on_output(i, out))
            )
        return self

    def __enter__(self) -> "PooledProbe":
        return self.attach()

    def _on_entry(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The first floating tensor given to the first module: what flows into it."""
        given = [*args, *kwargs.values()]
        first = next(
            (t for t in given if isinstance(t, torch.Tensor) and t.is_floating_point()), None
        )
        if first is not None:
            self._on_output(0, first)

    def _forward_slots(self, t: torch.Tensor) -> "list[float] | torch.Tensor":
        x = t.detach()
        if x.device.type == "cpu":
            flat = _flat(x)
            values = _host_summary(flat, extremes=False)
            # max |x| from one pass that allocates nothing (abs() would copy): NaN if any is
            low, high = torch.aminmax(flat)
            values[2] = max(-float(low), float(high))
            return values + self._host_events(x, None)
        head = _summary(x, extremes=True)
        return torch.cat([head, self._events(x).to(device=head.device, dtype=head.dtype)])

    def _on_grad(self, index: int, grad: torch.Tensor) -> None:
        g = grad.detach()
        if g.numel() == 0:
            return
        rounded = self._round(g)
        slots: list[float] | torch.Tensor
        if g.device.type == "cpu":
            values = _host_summary(_flat(rounded), extremes=False)
            if rounded is not g:  # non-finite values are counted on the gradient as it arrived
                values[3] = float((~torch.isfinite(g)).sum())
            slots = [values[0], values[1], values[3], *self._host_events(g, None)]
        else:
            s = _summary(rounded, extremes=False)
            if rounded is not g:
                s[3] = (~torch.isfinite(g)).sum()
            events = self._events(g).to(device=s.device, dtype=s.dtype)
            slots = torch.cat([s[0:2], s[3:4], events])
        self._bwd_parts.setdefault(index, []).append((g.numel(), slots))

    def _weight_grad_var(self, grad: torch.Tensor) -> float:
        return _host_summary(_flat(grad), extremes=False)[1]  # one pass where that is exact

    def results(self) -> list[LayerStats]:
        """As ``Probe.results``: one ``LayerStats`` per module given, in the order given."""
        for index, parts in self._fwd_parts.items():
            self._elements[index], self._fwd[index] = _pool(parts, has_max=True)
        for index, parts in self._bwd_parts.items():
            self._bwd[index] = _pool(parts, has_max=False)[1][1:]  # the mean is not a slot
        return super().results()
