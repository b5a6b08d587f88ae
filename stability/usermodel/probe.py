"""Per-module statistics of any network, named by qualified name (``encoder.layers.3.fc1``).

The project's ``core.probe.Probe`` numbers the layers of a stack; a user's network is a
tree of residual blocks, attention and normalisation, so each row here is one module, in
the order of its first forward call, keyed by the name ``named_modules()`` gives it. For
the module's output (every tensor of a tuple or dict output, pooled, over every call when a
module is shared) and for the gradient arriving at that output, it records the variance,
max |x| and what storing the values in float16 and bfloat16 would do: the headroom in
binades before overflow, ``log2(max_finite / max|x|)``, and the fractions that would go
subnormal or flush to zero (``core.emulation.precision_event_counts``, rounding as a cast
does). Moments are pooled in float64 (Chan's combination), so large tensors lose no digits.
"""

import fnmatch
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from stability.core.dtypes import DType, get_dtype
from stability.core.emulation import precision_event_counts
from stability.errors import StabilityError

FORMATS = ("float16", "bfloat16")  # the reduced formats whose headroom every row reports
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)  # output = a child's: no row


@dataclass
class _Pool:
    """Running moments and precision counts of every tensor seen at one place."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    max_abs: float = 0.0
    low: float = math.inf  # the smallest finite value: a probability output has low >= 0
    nonfinite: int = 0
    events: dict[str, list[int]] = field(default_factory=lambda: {f: [0, 0, 0] for f in FORMATS})

    def add(self, x: torch.Tensor, formats: dict[str, DType]) -> None:
        flat = x.detach().reshape(-1)
        if flat.numel() == 0 or not (flat.is_floating_point()):
            return
        finite = torch.isfinite(flat)
        bad = int((~finite).sum())
        self.nonfinite += bad
        values = flat[finite] if bad else flat
        n = values.numel()
        for name, fmt in formats.items():
            counts = precision_event_counts(values, fmt).tolist()
            self.events[name] = [a + int(b) for a, b in zip(self.events[name], counts, strict=True)]
        if n == 0:
            return
        v = values.double()
        mean = float(v.mean())
        m2 = float(((v - mean) ** 2).sum())
        self.max_abs = max(self.max_abs, float(v.abs().max()))
        self.low = min(self.low, float(v.min()))
        total = self.n + n
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.n * n / total
        self.mean += delta * n / total
        self.n = total

    def columns(self, prefix: str, formats: dict[str, DType]) -> dict[str, Any]:
        """``{prefix}_var``, ``_max_abs``, and per format headroom, subnormal and flush."""
        seen = self.n + self.nonfinite
        out: dict[str, Any] = {
            f"{prefix}_var": self.m2 / self.n if self.n else math.nan,
            f"{prefix}_max_abs": self.max_abs if self.n else math.nan,
            f"{prefix}_min": self.low if self.n else math.nan,
            f"{prefix}_nonfinite": self.nonfinite,
            # Sum of squares (per call, summed): what the chain rule carries across a
            # change of shape (pooling, heads), where the per-element variance does not.
            f"{prefix}_sq_norm": self.m2 + self.n * self.mean * self.mean,
        }
        for name, fmt in formats.items():
            short = "f16" if name == "float16" else "bf16"
            _, subnormal, flush = self.events[name]
            out[f"{prefix}_{short}_headroom"] = headroom(self.max_abs, fmt) if self.n else math.nan
            out[f"{prefix}_{short}_subnormal"] = subnormal / seen if seen else math.nan
            out[f"{prefix}_{short}_flush"] = flush / seen if seen else math.nan
        return out


def headroom(max_abs: float, fmt: DType) -> float:
    """Binades before overflow: ``log2(max_finite / max|x|)`` (negative: it overflows)."""
    if max_abs == 0:
        return math.inf
    return math.log2(fmt.max / max_abs)


def _tensors(output: Any) -> list[torch.Tensor]:
    """The tensors of a module's output: itself, or those in a tuple, list or dict."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, tuple | list):
        return [t for t in output if isinstance(t, torch.Tensor)]
    return []


def default_modules(model: nn.Module) -> list[str]:
    """Names watched by default: every module with parameters of its own (Linear, Conv,
    norms, Embedding), every composite block (residual blocks, attention, the model) and
    every module the user wrote; not bare containers, whose output is their last child's,
    nor torch's parameter-free leaves (ReLU, Dropout), whose output the next layer shows."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, CONTAINERS):
            continue
        own = any(True for _ in module.parameters(recurse=False))
        composite = any(True for _ in module.children())
        users = not type(module).__module__.startswith("torch.")
        if own or composite or users:
            names.append(name)
    return names


def select_modules(model: nn.Module, patterns: Sequence[str] | None) -> list[str]:
    """Qualified names matching any glob in ``patterns`` (``None``: ``default_modules``).

    The model itself is named ``""``; the glob ``<model>`` selects it."""
    if patterns is None:
        return default_modules(model)
    labels = {name or "<model>": name for name, _ in model.named_modules()}
    unmatched = [p for p in patterns if not fnmatch.filter(labels, p)]
    if unmatched:
        sample = ", ".join(list(labels)[:8])
        raise StabilityError(
            f"--modules {','.join(unmatched)} matches no module; names look like: {sample}"
        )
    return [
        name
        for label, name in labels.items()
        if any(fnmatch.fnmatchcase(label, p) for p in patterns)
    ]


class ModuleProbe:
    """Hooks on the named modules; ``rows()`` after one (or more) forward and backward."""

    def __init__(self, model: nn.Module, names: Iterable[str]) -> None:
        self.model = model
        modules = dict(model.named_modules())
        self.names = list(names)
        self.modules = {n: modules[n] for n in self.names}
        self.formats = {f: get_dtype(f) for f in FORMATS}
        self.fwd = {n: _Pool() for n in self.names}
        self.bwd = {n: _Pool() for n in self.names}
        self.order: dict[str, int] = {}
        self._handles: list[RemovableHandle] = []

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def on_output(module: nn.Module, args: Any, output: Any) -> None:
            self.order.setdefault(name, len(self.order) + 1)
            for t in _tensors(output):
                self.fwd[name].add(t, self.formats)
                if t.requires_grad:
                    t.register_hook(lambda g: self.bwd[name].add(g, self.formats))  # type: ignore[no-untyped-call]

        return on_output

    def __enter__(self) -> "ModuleProbe":
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def rows(self) -> list[dict[str, Any]]:
        """One dict per module that ran, in order of its first forward call."""
        out = []
        for name in sorted(self.order, key=self.order.__getitem__):
            module = self.modules[name]
            own = list(module.parameters(recurse=False))
            grads = [p.grad.detach().reshape(-1) for p in own if p.grad is not None]
            row: dict[str, Any] = {
                "order": self.order[name],
                "module": name or "<model>",
                "kind": type(module).__name__,
                "params": sum(p.numel() for p in module.parameters()),
                "elements": self.fwd[name].n + self.fwd[name].nonfinite,
            }
            row.update(self.fwd[name].columns("fwd", self.formats))
            row.update(self.bwd[name].columns("bwd", self.formats))
            row["param_grad_var"] = (
                float(torch.cat(grads).double().var(correction=0)) if grads else math.nan
            )
            out.append(row)
        return out


def probe_modules(
    model: nn.Module,
    forward: Callable[[], torch.Tensor],
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    patterns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One forward (``forward()``) and backward (``loss_of(out).backward()``) pass with the
    selected modules watched; gradients are zeroed first and left in place afterwards."""
    names = select_modules(model, patterns)
    if not names:
        raise StabilityError("no module to watch: the model has no parameters; pass --modules")
    model.zero_grad(set_to_none=True)
    with ModuleProbe(model, names) as p:
        out = forward()
        if out.requires_grad:
            loss_of(out).backward()  # type: ignore[no-untyped-call]
    return p.rows()
