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

It also records what a verdict needs to judge a module by what it does to the signal that
passes through it: the mean square of its input (the first floating-point tensor among its
arguments) and of the gradient arriving at that input, its role (``usermodel.roles``), the
stack and position of a repeated block, and what its output should be where that is known.
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
from stability.core.outputs import tensors_in
from stability.errors import StabilityError
from stability.usermodel.roles import (
    CONTAINERS,
    bias_mean_square,
    expected_mean_square,
    find_stacks,
    norm_eps,
    smallest_scale,
    static_role,
)

FORMATS = ("float16", "bfloat16")  # the reduced formats whose headroom every row reports


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
    lost_sq: dict[str, float] = field(default_factory=dict)  # sum of x^2 of what flushes

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
            if counts[2]:
                lost = values[(values.to(fmt.dtype) == 0) & (values != 0)]
                self.lost_sq[name] = self.lost_sq.get(name, 0.0) + float(
                    lost.double().square().sum()
                )
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
            f"{prefix}_ms": self.m2 / self.n + self.mean * self.mean if self.n else math.nan,
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
            sq = self.m2 + self.n * self.mean * self.mean
            out[f"{prefix}_{short}_flush_energy"] = (
                self.lost_sq.get(name, 0.0) / sq if sq > 0 else math.nan
            )
        return out


def headroom(max_abs: float, fmt: DType) -> float:
    """Binades before overflow: ``log2(max_finite / max|x|)`` (negative: it overflows)."""
    if max_abs == 0:
        return math.inf
    return math.log2(fmt.max / max_abs)


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


def signal_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The signal a module transforms: its first floating-point positional argument, else
    ``hidden_states`` or the first floating-point keyword argument; None (token ids)."""
    found = tensors_in(args)
    if found:
        return found[0]
    hidden = kwargs.get("hidden_states")
    if isinstance(hidden, torch.Tensor) and hidden.is_floating_point():
        return hidden
    found = tensors_in(list(kwargs.values()))
    return found[0] if found else None


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
        self.fin = {n: _Pool() for n in self.names}  # the signal entering the module
        self.bin = {n: _Pool() for n in self.names}  # the gradient at that signal
        self.order: dict[str, int] = {}
        self.reshapes: dict[str, bool] = {}  # its output's shape is not its input's
        self.blocks = {m: (s.name, i) for s in find_stacks(model) for i, m in enumerate(s.members)}
        self._handles: list[RemovableHandle] = []

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any, Any], None]:
        def on_output(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            self.order.setdefault(name, len(self.order) + 1)
            x = signal_input(args, kwargs)
            outs = tensors_in(output)
            if name not in self.reshapes and x is not None and outs:
                self.reshapes[name] = tuple(x.shape) != tuple(outs[0].shape)
            if x is not None:
                self.fin[name].add(x, {})
                if x.requires_grad:
                    x.register_hook(lambda g: self.bin[name].add(g, {}))  # type: ignore[no-untyped-call]
            for t in outs:
                self.fwd[name].add(t, self.formats)
                if t.requires_grad:
                    t.register_hook(lambda g: self.bwd[name].add(g, self.formats))  # type: ignore[no-untyped-call]

        return on_output

    def __enter__(self) -> "ModuleProbe":
        for name, module in self.modules.items():
            hook = module.register_forward_hook(self._hook(name), with_kwargs=True)
            self._handles.append(hook)
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
            row.update(_param_grad_flush(grads, self.formats["float16"]))
            row.update(self._context(name, module))
            out.append(row)
        return out

    def _context(self, name: str, module: nn.Module) -> dict[str, Any]:
        """Role, stack position, input figures and expectations of one module."""
        role = static_role(module)
        stack, index = self.blocks.get(name, ("", -1))
        if stack and role not in ("parameter-free", "frozen"):
            role = "block"
        got_none = self.bwd[name].n + self.bwd[name].nonfinite == 0
        trainable = [p for p in module.parameters() if p.requires_grad]
        if trainable and got_none and all(p.grad is None for p in trainable):
            role = "no-gradient"
        fin, bin_ = self.fin[name], self.bin[name]
        scale = smallest_scale(self.model, name)
        leaf = not any(any(True for _ in c.parameters()) for c in module.children())
        return {
            "role": role,
            "leaf": leaf,
            "reshapes": self.reshapes.get(name, False),
            "stack": stack,
            "block_index": index,
            "in_ms": fin.m2 / fin.n + fin.mean * fin.mean if fin.n else math.nan,
            "in_nonfinite": fin.nonfinite,
            "in_bwd_sq_norm": bin_.m2 + bin_.n * bin_.mean * bin_.mean if bin_.n else math.nan,
            "bias_ms": bias_mean_square(module),
            "expected_ms": expected_mean_square(module, role),
            "norm_eps": norm_eps(module) if role == "norm" else math.nan,
            "small_scale": f"{scale[0]} (max |x| {scale[1]:.3g})" if scale else "",
        }


def _param_grad_flush(grads: list[torch.Tensor], fp16: DType) -> dict[str, float]:
    """The fraction of the module's own parameter gradients float16 would flush to zero
    (and make subnormal): the updates a float16 run without loss scaling would lose."""
    if not grads:
        return {"param_grad_f16_subnormal": math.nan, "param_grad_f16_flush": math.nan,
                "param_grad_f16_flush_energy": math.nan}  # fmt: skip
    flat = torch.cat(grads)
    finite = flat[torch.isfinite(flat)]
    _, subnormal, flush = (int(c) for c in precision_event_counts(finite, fp16).tolist())
    n = max(flat.numel(), 1)
    lost = finite[(finite.to(fp16.dtype) == 0) & (finite != 0)]
    total = float(finite.double().square().sum())
    energy = float(lost.double().square().sum()) / total if total > 0 else math.nan
    return {"param_grad_f16_subnormal": subnormal / n, "param_grad_f16_flush": flush / n,
            "param_grad_f16_flush_energy": energy}  # fmt: skip


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
        trainable = any(q.requires_grad for q in model.parameters())
        if trainable and not out.requires_grad:
            raise StabilityError(
                f"the model's output ({out.dtype}, shape {tuple(out.shape)}) has no gradient "
                "path to its parameters (detached, an integer or an argmax): nothing to judge"
            )
        if out.requires_grad:
            loss_of(out).backward()  # type: ignore[no-untyped-call]
    return p.rows()
