"""The op-level replay: which operator made the first inf or NaN of a step, and how.

The failing step is rerun (forward, loss, backward) under a dispatch mode that looks at every
operator's inputs and outputs, to find the first operator that made an inf from finite inputs
(overflow) or a NaN from non-NaN inputs, and how: 0/0, inf/inf, 0*inf, inf - inf (including
a matmul whose products overflowed with both signs). The weights are not touched, so the
replay sees exactly the step the watch saw fail.
"""

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.hooks import RemovableHandle

from stability.core.emulation import round_to
from stability.train.doctor.diagnosis import OpEvent
from stability.train.trainer import Trainer

_MATMULS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "mv", "addmv", "dot"}
_SUMS = {"add", "add_", "sub", "sub_", "sum", "mean", "cumsum", "rsub"}
_PRODUCTS = {"mul", "mul_"}
_DIVISIONS = {"div", "div_", "true_divide"}
_FACTORIES = {"empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided"}


def tensors_of(obj: object) -> list[torch.Tensor]:
    """The floating-point tensors in a (nested) value: a tensor, tuple, list or dict; fp8
    ones (the fp8 emulation's casts) read in float32, as torch has no isinf for them."""
    if isinstance(obj, torch.Tensor):
        if not obj.is_floating_point():
            return []
        return [obj.float() if obj.element_size() == 1 else obj]
    if isinstance(obj, list | tuple):
        return [t for o in obj for t in tensors_of(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in tensors_of(o)]
    return []


def _has(ts: Iterable[torch.Tensor], pred: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    return any(bool(pred(t).any()) for t in ts)


def _max_finite(ts: Iterable[torch.Tensor]) -> float:
    best = 0.0
    for t in ts:
        a = t.detach().abs()
        a = a[torch.isfinite(a)]
        if a.numel():
            best = max(best, float(a.amax()))
    return best


def _classify_nan(
    name: str, ins: list[torch.Tensor], args: tuple[Any, ...], out: torch.Tensor, in_inf: bool
) -> tuple[str, str]:
    """(mechanism, detail) of a NaN made by operator ``name`` from non-NaN inputs."""
    if name in _DIVISIONS:
        a = args[0]
        b = args[1] if len(args) > 1 else None
        if isinstance(a, torch.Tensor) and b is not None:
            bt = b if isinstance(b, torch.Tensor) else torch.tensor(float(b))
            if bool(((a == 0) & (bt == 0)).any()):
                return "0 / 0", "a zero numerator divided by a zero denominator"
            if bool((torch.isinf(a) & torch.isinf(bt)).any()):
                return "inf / inf", "both numerator and denominator overflowed"
    if name in _PRODUCTS:
        return "0 * inf", "an infinite factor met a zero factor"
    if name in _SUMS:
        return "inf - inf", "infinities of opposite sign were added"
    if name in _MATMULS:
        mats = [t for t in ins if t.dim() == 2]
        if len(mats) >= 2 and out.dim() == 2:
            m1, m2 = mats[-2], mats[-1]
            i, j = (int(v) for v in torch.isnan(out).nonzero()[0])
            terms = m1[i, :] * m2[:, j]  # the products in the operator's own dtype
            if bool(torch.isnan(terms).any()):
                return "0 * inf", f"output ({i}, {j}): an infinite entry met a zero entry"
            pos, neg = bool((terms == math.inf).any()), bool((terms == -math.inf).any())
            if pos and neg:
                why = "inputs held inf" if in_inf else "finite products overflowed"
                return "inf - inf", f"output ({i}, {j}): +inf and -inf products summed ({why})"
            return "inf - inf", f"output ({i}, {j}): partial sums overflowed with both signs"
    if in_inf:
        return "0 * inf or inf - inf", f"an inf input inside {name} gave NaN"
    return "invalid", f"{name} of finite inputs gave NaN (0/0-like or out of domain)"


class _FirstNonFinite(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Record the first operator that makes an inf from finite inputs, and the first NaN."""

    def __init__(self, context: list[tuple[str, str]]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.context = context  # [(where, phase)], mutated by the replay's hooks
        self.first_inf: OpEvent | None = None
        self.first_nan: OpEvent | None = None

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        ins = tensors_of(args) + tensors_of(kwargs)
        scan = self.first_nan is None and bool(ins) and name not in _FACTORIES
        mutable = bool(func._schema.is_mutable)
        if scan:  # judge inputs before the call: in-place operators overwrite them
            in_nan = _has(ins, torch.isnan)
            in_inf = _has(ins, torch.isinf)
            biggest = _max_finite(ins) if mutable and not in_inf else math.nan
        out = func(*args, **kwargs)
        if not scan:
            return out
        outs = tensors_of(out)
        where, phase = self.context[-1]
        if self.first_inf is None and not (in_inf or in_nan) and _has(outs, torch.isinf):
            if math.isnan(biggest):
                biggest = _max_finite(ins)
            dtype = out.dtype if isinstance(out, torch.Tensor) else outs[0].dtype  # fp8 kept
            limit = torch.finfo(dtype).max
            dname = str(dtype).replace("torch.", "")
            self.first_inf = OpEvent(
                where,
                phase,
                name,
                "overflow",
                f"finite inputs (max |x| {biggest:.3g}) gave inf in {dname} (max {limit:.3g})",
            )
        if not in_nan and _has(outs, torch.isnan):
            nan_out = next(t for t in outs if bool(torch.isnan(t).any()))
            mechanism, detail = _classify_nan(name, ins, args, nan_out, in_inf)
            self.first_nan = OpEvent(where, phase, name, mechanism, detail)
            raise _Found  # nothing later in the step can change the verdict
        return out


class _Found(Exception):
    """Ends a replay early, once the first NaN is classified."""


def replay(trainer: Trainer, step: int) -> tuple[OpEvent | None, OpEvent | None]:
    """Rerun ``step`` (forward, loss, backward) under ``_FirstNonFinite``; weights untouched."""
    watched = trainer.model.watched()
    context: list[tuple[str, str]] = [("input", "forward")]
    handles: list[RemovableHandle] = []
    after = [label for label, _ in watched[1:]] + ["loss"]
    for i, (label, module) in enumerate(watched):

        def pre(m: nn.Module, a: Any, label: str = label) -> None:
            context.append((label, "forward"))

        def post(m: nn.Module, a: Any, out: torch.Tensor, i: int = i, label: str = label) -> None:
            context.append((after[i], "forward"))
            if out.requires_grad:

                def on_grad(g: torch.Tensor) -> None:
                    context.append((label, "backward"))

                out.register_hook(on_grad)  # type: ignore[no-untyped-call]

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    trainer.optimizer.zero_grad(set_to_none=True)
    mode = _FirstNonFinite(context)
    try:
        with trainer.half_weights(), mode:
            loss = trainer.forward_loss(step)
            context.append(("loss", "backward"))
            trainer.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            if trainer.mode == "emulated":
                for label, module in watched:
                    context.append((label, "backward"))
                    for p in module.parameters():
                        if p.grad is not None:
                            p.grad.copy_(round_to(p.grad, trainer.dtype.dtype))
    except Exception:
        # _Found, possibly re-raised by the autograd engine as another type during backward.
        if mode.first_nan is None:
            raise
    finally:
        for h in handles:
            h.remove()
        trainer.optimizer.zero_grad(set_to_none=True)
    return mode.first_inf, mode.first_nan
