"""A few training steps of one model, and per module the four figures of a coordinate check.

For every watched module (parameters of its own, or a numbered block) and every recorded
step ``t`` (the forward pass after ``t`` updates, on the same batch):

- ``out_rms``, ``out_l1``: RMS and mean |x| of its output (mup's coord check plots the l1);
- ``delta_rms``: RMS of its output minus its step-0 output;
- ``dwx_rms``: RMS of ``f(x_0; W_t) - f(x_0; W_0)``: the module at step ``t``'s parameters
  applied to its step-0 input. For a Linear that is ``dW x_0 (+ db)``: the weight update's
  own effect, apart from what the layers below changed.
"""

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

from stability.core.outputs import main_tensor
from stability.scaling.roles import BLOCK, own_parameters


def watched(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules with parameters of their own, and numbered blocks that hold parameters."""
    found = []
    for name, mod in model.named_modules():
        if not name or "parametrizations" in name.split("."):
            continue
        own = any(True for _ in own_parameters(mod))
        block = name.split(".")[-1].isdigit() and any(True for _ in mod.parameters())
        if own or block:
            found.append((name, mod))
    return found


def is_block(name: str) -> bool:
    return name.split(".")[-1].isdigit()


def depth_alias(name: str, depth: int | None) -> str:
    """The last block ``blocks.{L-1}`` is ``blocks.last``: a name every depth has."""
    if depth is None or not BLOCK.search(name):
        return name
    parts = name.split(".")
    return ".".join("last" if p == str(depth - 1) else p for p in parts)


def _rms(x: torch.Tensor) -> float:
    return float(x.detach().double().pow(2).mean().sqrt())


def _detach(value: Any) -> Any:
    return tree_map(lambda v: v.detach() if isinstance(v, torch.Tensor) else v, value)


def train_and_measure(
    model: nn.Module,
    forward: Callable[[], Any],
    loss_of: Callable[[Any], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    steps: list[int],
) -> list[dict[str, Any]]:
    """Train ``max(steps)`` steps on one batch; one row per (module, recorded step)."""
    modules = watched(model)
    seen: dict[str, tuple[Any, Any, torch.Tensor | None]] = {}
    live = [True]

    def hook(name: str) -> Callable[..., None]:
        def record(mod: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            if live[0]:
                main = main_tensor(output)
                seen[name] = (_detach(args), _detach(kwargs), None if main is None else
                              main.detach().clone())  # fmt: skip

        return record

    handles = [m.register_forward_hook(hook(n), with_kwargs=True) for n, m in modules]
    rows: list[dict[str, Any]] = []
    start: dict[str, tuple[Any, Any, torch.Tensor | None]] = {}
    try:
        for t in range(max(steps) + 1):
            seen.clear()
            loss = loss_of(forward())
            if t == 0:
                start = dict(seen)
            if t in steps:
                rows += _figures(modules, seen, start, t, float(loss.detach()), live)
            if t < max(steps):
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
    finally:
        for h in handles:
            h.remove()
    return rows


def _figures(
    modules: list[tuple[str, nn.Module]],
    now: dict[str, tuple[Any, Any, torch.Tensor | None]],
    start: dict[str, tuple[Any, Any, torch.Tensor | None]],
    step: int,
    loss: float,
    live: list[bool],
) -> list[dict[str, Any]]:
    rows = []
    live[0] = False
    try:
        with torch.no_grad():
            for order, (name, mod) in enumerate(modules):
                if name not in now or name not in start:
                    continue
                out, out0 = now[name][2], start[name][2]
                if out is None or out0 is None:
                    continue
                args0, kwargs0, _ = start[name]
                moved = main_tensor(mod(*args0, **kwargs0))
                dwx = float("nan") if moved is None else _rms(moved - out0)
                rows.append({"module": name, "kind": type(mod).__name__, "order": order,
                             "step": step, "loss": loss, "out_rms": _rms(out),
                             "out_l1": float(out.double().abs().mean()),
                             "delta_rms": _rms(out - out0), "dwx_rms": dwx})  # fmt: skip
    finally:
        live[0] = True
    return rows
