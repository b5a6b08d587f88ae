"""The eager modules behind a compiled or data-parallel model, and eager recording steps.

``torch.compile(model)`` returns an ``OptimizedModule`` whose graph was traced once: hooks
registered on its submodules later are not seen (dynamo does not guard on module hooks), so
the watch's per-step hooks would record nothing. A recording call therefore runs the
original module eagerly (``compiled._orig_mod``): the step trains exactly as it would, its
statistics are real, and the steps in between run the compiled graph. The non-finite check
needs no submodule hook (it reads the outputs and the parameters' gradients from outside the
graph), and the attribution replays the failing call on the eager module.

``DistributedDataParallel`` calls its ``module``: hooks there fire as usual; the replay runs
on ``module`` so that it starts no collective.
"""

from typing import Any

from torch import nn


def eager_module(model: nn.Module) -> nn.Module:
    """``model`` without its compile and DDP wrappers (any nesting of the two)."""
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if inner is None and _is_ddp(model):
            inner = model.module
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _is_ddp(model: nn.Module) -> bool:
    from torch.nn.parallel import DistributedDataParallel

    return isinstance(model, DistributedDataParallel)


def is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` is (or wraps) a ``torch.compile`` ``OptimizedModule``."""
    while isinstance(model, nn.Module):
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            return True
        model = model.module if _is_ddp(model) else None  # type: ignore[assignment]
    return False


_COMPILED_FORWARD = "_stability_compiled_forward"


def forward_eagerly(model: nn.Module, eager: bool) -> None:
    """Make the next calls of a compiled ``model`` run its original module eagerly
    (``eager=True``) or its compiled graph again; no-op for a model that is not compiled.

    The switch is set between calls: ``nn.Module.__call__`` reads ``forward`` before the
    forward pre-hooks run."""
    inner = getattr(model, "_orig_mod", None)
    if not isinstance(inner, nn.Module):
        return
    state: dict[str, Any] = model.__dict__
    if eager and _COMPILED_FORWARD not in state:
        state[_COMPILED_FORWARD] = state.get("forward")
        state["forward"] = inner.__call__
    elif not eager and _COMPILED_FORWARD in state:
        state["forward"] = state.pop(_COMPILED_FORWARD)
