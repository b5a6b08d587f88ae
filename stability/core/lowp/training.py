"""fp8 training, emulated in the float32 carrier: what every matmul of a step loses.

While ``Fp8Training(model)`` is installed, each matmul module (``matmul.is_matmul``) computes
its forward from its input and weight quantised to the format's forward grid (HYBRID: E4M3)
under the recipe (default ``tensor``: dynamic per-tensor amax), and the gradient arriving at
its output is quantised to the backward grid (HYBRID: E5M2) under the same recipe before the
weight and input gradients are computed from it, as an fp8 GEMM does. The quantisers pass
gradients straight through; the bias is added in the carrier; the output stays in the carrier
(fp8 GEMMs write bf16/fp32) but its events in the forward grid are counted. Accumulation
inside the GEMM is float32 here: emulation does not model the hardware's.

A step is one call of the model itself (a forward pre-hook counts them); per step, module
and tensor (input, weight, output, grad) the overflow, saturation, underflow and flush counts
and the scale are kept as tensors (no host sync) until ``rows()`` reads them.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from stability.core.lowp.formats import FORMATS, LowpFormat, get_format
from stability.core.lowp.matmul import (
    channels_back,
    channels_last,
    is_matmul,
    matmul_op,
    weight_from_matrix,
    weight_matrix,
)
from stability.core.lowp.quantize import EVENTS, Quantized, quantize
from stability.core.lowp.recipes import AmaxHistory, Recipe, get_recipe, history_for
from stability.errors import StabilityError

TENSORS = ("input", "weight", "output", "grad")
PHASE = {"input": "forward", "weight": "forward", "output": "forward", "grad": "backward"}
PLAIN = sorted(n for n, f in FORMATS.items() if not f.blocked)


class _StraightThrough(torch.autograd.Function):
    """Forward: the quantised values; backward: the gradient unchanged (the quantiser's STE)."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, q: torch.Tensor
    ) -> torch.Tensor:
        return q

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        return grad, None


class _QuantiseGrad(torch.autograd.Function):
    """Forward: identity; backward: the gradient as ``fn`` quantises it."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        y: torch.Tensor,
        fn: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        ctx.fn = fn  # type: ignore[attr-defined]
        return y.view_as(y)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        return ctx.fn(grad), None  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _Record:
    """One quantisation of one tensor: its event counts and scale, still on the device."""

    step: int
    module: str
    tensor: str
    counts: torch.Tensor  # (overflow, saturation, underflow, flush, zero after rounding)
    elements: int
    log2_scale: torch.Tensor  # (min, max) over rows


class Fp8Training:
    """fp8 (default HYBRID, recipe ``tensor``) on every matmul of ``model`` while installed.

    ``quantize_grad=False`` leaves the backward unquantised: the known-bad variant the
    property suite uses as its witness. ``install``/``remove`` (or ``with``) may be repeated;
    the records and the delayed recipe's amax histories carry over.
    """

    def __init__(
        self,
        model: nn.Module,
        fmt: LowpFormat | str = "hybrid",
        recipe: Recipe | str = "tensor",
        *,
        quantize_grad: bool = True,
    ) -> None:
        self.format = get_format(fmt) if isinstance(fmt, str) else fmt
        if self.format.blocked:
            raise StabilityError(
                f"fp8 training emulation takes a plain fp8 format; got {self.format.name!r}, "
                f"expected one of {PLAIN}"
            )
        self.recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
        self.model = model
        self.quantize_grad = quantize_grad
        self.modules = {name or "<model>": m for name, m in model.named_modules() if is_matmul(m)}
        self.step = -1  # the root's pre-hook makes the first call step 0
        self.order: dict[str, int] = {}  # forward order, 1-based, from the first call
        self.records: list[_Record] = []
        self.histories: dict[tuple[str, str], AmaxHistory] = {}
        self._handles: list[Any] = []
        self._patched: list[nn.Module] = []

    # --- quantisers ---------------------------------------------------------------------
    def _quantize(self, name: str, tensor: str, x: torch.Tensor) -> Quantized:
        history = history_for(self.histories, (name, tensor), self.recipe)
        q = quantize(x, self.format, self.recipe, backward=tensor == "grad", history=history)
        ls = q.log2_scale.detach().reshape(-1)
        counts = torch.cat([q.event_counts(), (q.rounded == 0).sum().reshape(1)])
        self.records.append(_Record(max(self.step, 0), name, tensor, counts,
                                    x.numel(), torch.stack([ls.min(), ls.max()])))  # fmt: skip
        return q

    def _forward_q(self, name: str, tensor: str, x: torch.Tensor) -> torch.Tensor:
        q = self._quantize(name, tensor, x.detach())
        out: torch.Tensor = _StraightThrough.apply(x, q.values)  # type: ignore[no-untyped-call]
        return out

    def _grad_fn(self, name: str, module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        def quantise(g: torch.Tensor) -> torch.Tensor:
            q = self._quantize(name, "grad", channels_last(module, g))
            return channels_back(module, q.values)

        return quantise

    def _forward(self, name: str, module: nn.Module) -> Callable[..., torch.Tensor]:
        def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
            x = args[0] if args else next(iter(kwargs.values()))
            self.order.setdefault(name, len(self.order) + 1)
            w = module.weight
            assert isinstance(w, torch.Tensor)  # is_matmul checked it
            b = getattr(module, "bias", None)
            qx = channels_back(module, self._forward_q(name, "input", channels_last(module, x)))
            qwm = self._forward_q(name, "weight", weight_matrix(module, w))
            qw = weight_from_matrix(module, qwm, w.shape)
            y = matmul_op(module, qx, qw, b if isinstance(b, torch.Tensor) else None)
            self._quantize(name, "output", channels_last(module, y.detach()))
            if self.quantize_grad and y.requires_grad:
                y = _QuantiseGrad.apply(y, self._grad_fn(name, module))  # type: ignore[no-untyped-call]
            return y

        return forward

    # --- installing -----------------------------------------------------------------------
    def _count_step(self, module: nn.Module, args: Any) -> None:
        self.step += 1

    def install(self) -> "Fp8Training":
        """Patch every matmul's forward (an instance attribute) and count the model's calls."""
        if self._patched:
            return self
        self._handles.append(self.model.register_forward_pre_hook(self._count_step))
        for name, module in self.modules.items():
            module.forward = self._forward(name, module)
            self._patched.append(module)
        return self

    def remove(self) -> None:
        """Back to the modules' own forward; nothing of the emulation stays on them."""
        for module in self._patched:
            del module.forward
        self._patched.clear()
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> "Fp8Training":
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # --- reading ----------------------------------------------------------------------------
    def rows(self, steps: int | None = None) -> list[dict[str, Any]]:
        """One row per (step, module, tensor), summed over the module's calls in the step,
        in step then forward order; only steps below ``steps`` when given (a replay of a
        failing step counts as a call of its own and is left out so)."""
        acc: dict[tuple[int, str, str], list[Any]] = {}
        for r in self.records:
            if steps is not None and r.step >= steps:
                continue
            a = acc.setdefault((r.step, r.module, r.tensor), [0, [], []])
            a[0] += r.elements
            a[1].append(r.counts)
            a[2].append(r.log2_scale)
        rows = []
        for (step, module, tensor), (n, counts, scales) in acc.items():
            c = torch.stack(counts).sum(0).tolist()
            s = torch.stack(scales)
            elem = self.format.backward if tensor == "grad" else self.format.forward
            row: dict[str, Any] = {
                "step": step, "module": module, "order": self.order.get(module, 0),
                "kind": type(self.modules[module]).__name__, "tensor": tensor,
                "phase": PHASE[tensor], "format": self.format.name, "element": elem.name,
                "recipe": self.recipe.name, "elements": n,
            }  # fmt: skip
            row.update({f"{e}_frac": v / max(n, 1) for e, v in zip(EVENTS, c[:-1], strict=True)})
            row["zero_frac"] = c[-1] / max(n, 1)  # zero in the format: flushed, or zero on arrival
            row["scale_log2_min"] = float(s[:, 0].min())
            row["scale_log2_max"] = float(s[:, 1].max())
            rows.append(row)
        rank = {t: i for i, t in enumerate(TENSORS)}
        return sorted(rows, key=lambda r: (r["step"], r["order"], rank[r["tensor"]]))


@contextmanager
def fp8_training(
    model: nn.Module, fmt: LowpFormat | str = "hybrid", recipe: Recipe | str = "tensor"
) -> Iterator[Fp8Training]:
    """``model`` trains in emulated fp8 inside the block; its own forwards come back after."""
    emu = Fp8Training(model, fmt, recipe)
    with emu:
        yield emu
