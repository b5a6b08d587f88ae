"""Per-module low-precision figures: every matmul's input, weight, output and gradient in
each format and recipe, with the SQNR of its output against float64.

A module that does a matmul (``nn.Linear``, transformers' ``Conv1D``, ``nn.Conv*``: a
module with a weight of two or more dimensions) is hooked. On each call its input and
weight are quantised (blocks along the reduction dimension: a Linear's input features, a
conv's input channels), its output is recomputed in float64 from the quantised and from the
exact operands, and the ratio is the module's SQNR. Its output, and the gradient arriving
at it (in the format's backward grid: HYBRID's E5M2), are quantised too for their events.
What is not modelled: the precision of the GEMM's accumulation (float64 here).
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from stability.core.lowp.formats import LowpFormat
from stability.core.lowp.matmul import (
    channels_back,
    channels_last,
    is_matmul,
    matmul_op,
    weight_from_matrix,
    weight_matrix,
)
from stability.core.lowp.quantize import EVENTS, Quantized, quantize, recipe_name
from stability.core.lowp.recipes import AmaxHistory, Recipe, history_for
from stability.core.lowp.sqnr import combine_db, db, gaussian_sqnr_db
from stability.core.outputs import tensors_in
from stability.usermodel.probe import signal_input

TENSORS = ("input", "weight", "output", "grad")


def _weight(module: nn.Module) -> torch.Tensor:
    w = module.weight
    assert isinstance(w, torch.Tensor)  # is_matmul checked it
    return w.detach()


def _apply(module: nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The module's own op, in whatever dtype ``x`` and ``w`` hold (float64 here)."""
    b = getattr(module, "bias", None)
    return matmul_op(module, x, w, b.detach().to(x.dtype) if isinstance(b, torch.Tensor) else None)


@dataclass
class _Acc:
    """What one tensor of one module lost in one format, summed over calls."""

    counts: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    n: int = 0
    row: int = 0
    amax: float = 0.0
    sq: float = 0.0
    scaled_amax: float = 0.0
    scaled_sq: float = 0.0
    signal: float = 0.0
    noise: float = 0.0
    scale_lo: float = math.inf
    scale_hi: float = -math.inf

    def add(self, x: torch.Tensor, q: Quantized) -> None:
        finite = torch.isfinite(x)
        every = bool(finite.all())
        xf = (x if every else x[finite]).double()
        self.counts = [
            a + int(b) for a, b in zip(self.counts, q.event_counts().tolist(), strict=True)
        ]
        self.n += x.numel()
        self.row = x.shape[-1] if x.dim() else 1
        if xf.numel():
            self.amax = max(self.amax, float(xf.abs().max()))
            self.sq += float(xf.square().sum())
            s = (q.scaled if every else q.scaled[finite]).double()
            self.scaled_amax = max(self.scaled_amax, float(s.abs().max()))
            self.scaled_sq += float(s.square().sum())
        ls = q.log2_scale[torch.isfinite(q.log2_scale)]
        if ls.numel():
            self.scale_lo = min(self.scale_lo, float(ls.min()))
            self.scale_hi = max(self.scale_hi, float(ls.max()))

    def add_error(self, ref: torch.Tensor, approx: torch.Tensor) -> None:
        keep = torch.isfinite(ref)
        self.signal += float(ref[keep].square().sum())
        self.noise += float((ref[keep] - approx[keep]).square().sum())


class FormatProbe:
    """Hooks on the matmul modules; ``rows()`` after a forward and backward pass.

    ``modules``: the ones to hook (default: every matmul module of ``model``). ``clear()``
    forgets the figures and keeps the delayed recipe's amax histories, so one probe can
    measure pass after pass (``integrations.watch_formats``: one per recorded step)."""

    def __init__(
        self, model: nn.Module, formats: Sequence[LowpFormat], recipes: Sequence[Recipe],
        modules: Mapping[str, nn.Module] | None = None,
    ) -> None:  # fmt: skip
        self.model = model
        if modules is None:
            modules = {n: m for n, m in model.named_modules() if is_matmul(m)}
        self.modules = dict(modules)
        # Blocked formats carry their own scale: one entry each, whatever the recipes.
        self.cases = [(f, r) for f in formats for r in ([recipes[0]] if f.blocked else recipes)]
        self.acc: dict[tuple[str, str, str, str], _Acc] = {}
        self.histories: dict[tuple[str, str, str, str], AmaxHistory] = {}
        self.order: dict[str, int] = {}
        self._handles: list[RemovableHandle] = []

    def _q(self, key: tuple[str, str, str, str], x: torch.Tensor, fmt: LowpFormat, recipe: Recipe,
           backward: bool = False) -> Quantized:  # fmt: skip
        history = history_for(self.histories, key, recipe)
        q = quantize(x, fmt, recipe, backward=backward, history=history)
        self.acc.setdefault(key, _Acc()).add(x, q)
        return q

    def _hook(self, name: str) -> Callable[..., None]:
        def on_output(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            x = signal_input(args, kwargs)
            outs = tensors_in(output)
            if x is None or not outs:
                return
            self.order.setdefault(name, len(self.order) + 1)
            xm = channels_last(module, x.detach()).float()
            w = _weight(module)
            wm = weight_matrix(module, w).float()
            ref = _apply(module, x.detach().double(), w.double())
            for fmt, recipe in self.cases:
                tag = (fmt.name, recipe_name(fmt, recipe))
                qx = self._q((name, *tag, "input"), xm, fmt, recipe).values
                qw = self._q((name, *tag, "weight"), wm, fmt, recipe).values
                qx = channels_back(module, qx)
                approx = _apply(
                    module, qx.double(), weight_from_matrix(module, qw, w.shape).double()
                )
                self.acc[(name, *tag, "input")].add_error(
                    xm.double(), channels_last(module, qx).double()
                )
                self.acc[(name, *tag, "weight")].add_error(wm.double(), qw.double())
                out = outs[0].detach().float()
                self._q((name, *tag, "output"), out, fmt, recipe)
                self.acc[(name, *tag, "output")].add_error(ref, approx)
                if outs[0].requires_grad:
                    outs[0].register_hook(self._grad_hook(name, fmt, recipe, tag))  # type: ignore[no-untyped-call]

        return on_output

    def _grad_hook(
        self, name: str, fmt: LowpFormat, recipe: Recipe, tag: tuple[str, str]
    ) -> Callable[[torch.Tensor], None]:
        def on_grad(g: torch.Tensor) -> None:
            gf = g.detach().float()
            q = self._q((name, *tag, "grad"), gf, fmt, recipe, backward=True)
            self.acc[(name, *tag, "grad")].add_error(gf.double(), q.values.double())

        return on_grad

    def attach(self) -> list[RemovableHandle]:
        """Hook every module's next calls; the caller removes the handles (the gradient hooks
        on the outputs they saw stay for the backward pass)."""
        return [
            m.register_forward_hook(self._hook(n), with_kwargs=True)
            for n, m in self.modules.items()
        ]

    def clear(self) -> None:
        """Forget the figures (and the forward order); the amax histories stay."""
        self.acc.clear()
        self.order.clear()

    def __enter__(self) -> "FormatProbe":
        self._handles.extend(self.attach())
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def rows(self) -> list[dict[str, Any]]:
        """One row per (module, format, recipe, tensor), in forward order."""
        fmts = {f.name: (f, r) for f, r in self.cases}
        out = []
        for (name, fname, rname, tensor), a in self.acc.items():
            fmt = fmts[fname][0]
            recipe = next(
                r for f, r in self.cases if f.name == fname and recipe_name(f, r) == rname
            )
            out.append(
                _row(
                    name,
                    type(self.modules[name]).__name__,
                    self.order[name],
                    fmt,
                    recipe,
                    rname,
                    tensor,
                    a,
                )
            )
        theory = {(r["module"], r["format"], r["recipe"], r["tensor"]): r["theory_db"] for r in out}
        for r in out:
            if r["tensor"] == "output":
                key = (r["module"], r["format"], r["recipe"])
                r["theory_db"] = combine_db(theory[(*key, "input")], theory[(*key, "weight")])
        order = {t: i for i, t in enumerate(TENSORS)}
        return sorted(out, key=lambda r: (r["order"], r["format"], r["recipe"], order[r["tensor"]]))


def _row(name: str, kind: str, order: int, fmt: LowpFormat, recipe: Recipe, rname: str,
         tensor: str, a: _Acc) -> dict[str, Any]:  # fmt: skip
    backward = tensor == "grad"
    elem = fmt.backward if backward else fmt.forward
    n = max(a.n, 1)
    rms = math.sqrt(a.sq / n)
    scaled_rms = math.sqrt(a.scaled_sq / n)
    row: dict[str, Any] = {
        "order": order, "module": name or "<model>", "kind": kind, "format": fmt.name,
        "recipe": rname, "tensor": tensor, "element": elem.name,
        "bits_per_element": fmt.bits_per_element, "elements": a.n,
    }  # fmt: skip
    for event, count in zip(EVENTS, a.counts, strict=True):
        row[f"{event}_frac"] = count / n
    row.update({
        "amax": a.amax, "rms": rms, "crest": a.amax / rms if rms > 0 else math.nan,
        "max_headroom": math.log2(elem.max / a.scaled_amax) if a.scaled_amax > 0 else math.inf,
        "normal_headroom": (math.log2(scaled_rms / elem.smallest_normal)
                            if scaled_rms > 0 else -math.inf),
        "scale_log2_min": a.scale_lo, "scale_log2_max": a.scale_hi,
        "sqnr_db": db(a.signal, a.noise),
        "theory_db": gaussian_sqnr_db(fmt, recipe, a.n, rms, a.row, backward),
    })  # fmt: skip
    return row


def probe_formats(
    model: nn.Module,
    forward: Callable[[], torch.Tensor],
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    formats: Sequence[LowpFormat],
    recipes: Sequence[Recipe],
) -> list[dict[str, Any]]:
    """One forward and backward pass with every matmul module's formats measured; the
    parameter gradients it makes are zeroed afterwards."""
    with FormatProbe(model, formats, recipes) as p:
        out = forward()
        if out.requires_grad:
            loss_of(out).backward()  # type: ignore[no-untyped-call]
    model.zero_grad(set_to_none=True)
    return p.rows()
