"""Which module, phase and operator of *any* network made its first inf or NaN.

The doctor's op-level replay (``doctor.replay``) for a user's own ``nn.Module``: the model's
forward (and, given the gradient that arrived at its output, its backward) is rerun under
the doctor's dispatch mode, with module hooks that keep the qualified name of the module
being run (``encoder.layers.3.mlp.fc1``), so the first operator that made an inf from
finite inputs or a NaN from non-NaN inputs is named with its module and phase.

The replay leaves the model as it found it: buffers (BatchNorm's running statistics) are
restored, no ``.grad`` is touched (``torch.autograd.grad``), and the random state is set to
the one the failing call saw (dropout draws the same mask on CPU) and put back afterwards.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from stability.core.outputs import tensors_in
from stability.train.doctor.diagnosis import INF, NAN, OpEvent
from stability.train.doctor.replay import _FirstNonFinite, tensors_of

_HALF = (torch.float16, torch.bfloat16)  # summed in float32: a float16 sum overflows early
ROOT = "<model>"  # the label of the model's own code, outside every watched child


@dataclass(frozen=True)
class Attribution:
    """Where the first non-finite value came from: module, phase, and the operator if known."""

    module: str  # qualified name, ROOT, "input", or "loss"
    phase: str  # forward, backward or update
    kind: str  # INF or NAN
    op: str | None = None
    mechanism: str = ""
    detail: str = ""

    def line(self) -> str:
        where = f"{self.module} ({self.phase})"
        what = f"{self.kind}" + (f" ({self.mechanism})" if self.mechanism else "")
        op = f", operator {self.op}" if self.op else ""
        detail = f"; {self.detail}" if self.detail else ""
        return f"{where}: {what}{op}{detail}"


def is_finite(t: torch.Tensor) -> bool:
    """One reduction: a finite sum means every value is finite; confirmed elementwise if not."""
    s = t.detach().sum(dtype=torch.float64) if t.numel() else torch.zeros(())
    return bool(torch.isfinite(s)) or bool(torch.isfinite(t.detach()).all())


def all_finite(tensors: Sequence[torch.Tensor], fused: bool = False) -> bool:
    """Every value finite: one reduction per tensor (one fused pass with ``fused``), then an
    element-by-element look only where a sum came out non-finite (it may have overflowed)."""
    if not tensors:
        return True
    detached = [t.detach() for t in tensors]
    if fused:  # the L2 norm: NaN and +-inf carry through the sum of squares
        sums = list(torch._foreach_norm(detached))
    else:
        sums = [t.sum(dtype=torch.float32) if t.dtype in _HALF else t.sum() for t in detached]
    if bool(torch.isfinite(torch.stack([s.float() for s in sums])).all()):
        return True
    return all(is_finite(t) for t, s in zip(detached, sums, strict=True) if not torch.isfinite(s))


def _kind(ts: Sequence[torch.Tensor]) -> str:
    return NAN if any(bool(torch.isnan(t.detach()).any()) for t in ts) else INF


def _context_hooks(
    named: Sequence[tuple[str, nn.Module]], context: list[tuple[str, str]], backward: bool
) -> list[RemovableHandle]:
    """Hooks that keep ``context[-1]`` = (module being run, phase) during a replay."""
    handles: list[RemovableHandle] = []
    entered: dict[int, list[tuple[str, str]]] = {}
    for name, module in named:

        def pre(m: nn.Module, a: Any, name: str = name) -> None:
            entered.setdefault(id(m), []).append(context[-1])
            context.append((name, "forward"))

        def post(m: nn.Module, a: Any, out: Any, name: str = name) -> None:
            context.append(entered[id(m)].pop())
            if not backward:
                return
            for t in tensors_in(out):
                if t.requires_grad:

                    def on_grad(g: torch.Tensor, name: str = name) -> None:
                        context.append((name, "backward"))

                    t.register_hook(on_grad)  # type: ignore[no-untyped-call]

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    return handles


def replay(
    model: nn.Module,
    named: Sequence[tuple[str, nn.Module]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    grad_outputs: Sequence[torch.Tensor | None] | None = None,
    rng_state: torch.Tensor | None = None,
) -> tuple[OpEvent | None, OpEvent | None]:
    """Rerun ``model(*args, **kwargs)`` (then its backward from ``grad_outputs``, if given)
    under the doctor's dispatch mode; (first inf, first NaN) events, named by module."""
    context: list[tuple[str, str]] = [(ROOT, "forward")]
    backward = grad_outputs is not None
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    handles = _context_hooks(named, context, backward)
    mode = _FirstNonFinite(context)
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        with torch.random.fork_rng(devices=[]), torch.set_grad_enabled(backward):
            if rng_state is not None:
                torch.set_rng_state(rng_state)
            with mode:
                out = tensors_in(model(*args, **kwargs))  # dataclasses too
                if backward and grad_outputs is not None:
                    pairs = [(o, g) for o, g in zip(out, grad_outputs, strict=False)
                             if o.requires_grad and g is not None]  # fmt: skip
                    if pairs and params:
                        context.append((ROOT, "backward"))
                        torch.autograd.grad(
                            [o for o, _ in pairs], params, [g for _, g in pairs],
                            allow_unused=True,
                        )  # fmt: skip
    except Exception:
        # The mode's early stop, possibly re-raised by the autograd engine as another type.
        if mode.first_nan is None:
            raise
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
    return mode.first_inf, mode.first_nan


def nonfinite_parameter(model: nn.Module) -> tuple[str, str] | None:
    """(qualified module name, INF or NAN) of the first parameter holding a non-finite value."""
    for name, p in model.named_parameters():
        if not is_finite(p):
            module = name.rpartition(".")[0] or ROOT
            return module, _kind([p])
    return None


def attribute(
    model: nn.Module,
    named: Sequence[tuple[str, nn.Module]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    phase: str,
    grad_outputs: Sequence[torch.Tensor | None] | None = None,
    rng_state: torch.Tensor | None = None,
    bad_parameter: str | None = None,
) -> Attribution:
    """The attribution of a call whose output (``phase="forward"``) or parameter gradients
    (``"backward"``) held a non-finite value. ``bad_parameter`` names the parameter whose
    gradient the caller saw go non-finite first (backward only)."""
    inputs = tensors_of(args) + tensors_of(kwargs)
    if phase == "forward" and any(not is_finite(t) for t in inputs):
        return Attribution("input", "forward", _kind(inputs), None, "non-finite input",
                           "the batch given to the model was already non-finite")  # fmt: skip
    broken = nonfinite_parameter(model)
    if broken is not None:
        why = "the weights were already non-finite: made by an earlier update"
        return Attribution(broken[0], "update", broken[1], None, "non-finite weights", why)
    if phase == "backward" and grad_outputs is not None:
        bad = [g for g in grad_outputs if g is not None and not is_finite(g)]
        if bad:
            why = "the gradient arriving at the model's output was non-finite"
            kind = _kind(bad)
            return Attribution("loss", "backward", kind, None, "non-finite loss gradient", why)
    first_inf, first_nan = replay(
        model, named, args, kwargs, grad_outputs if phase == "backward" else None, rng_state
    )
    # The earliest event is the cause: an inf is only recorded if it came before the NaN.
    event = first_inf if first_inf is not None else first_nan
    if event is not None:
        kind = INF if first_inf is not None else NAN
        detail = event.detail
        if first_inf is not None and first_nan is not None:
            detail += f"; NaN follows: {first_nan.line()}"
        return Attribution(event.where, event.phase, kind, event.op, event.mechanism, detail)
    where = (bad_parameter or "").rpartition(".")[0] or ROOT
    return Attribution(
        where, phase, INF, None, "not reproduced",
        "the replay of this call stayed finite (a random or data-dependent operation?)",
    )  # fmt: skip
