"""How ``stability.testing``'s assertions call a model, and which of its modules they read.

The input ``x`` is what the model is called with: a tensor (``model(x)``), a dict of keyword
arguments (``model(**x)``: a Hugging Face batch of ``input_ids``, ``attention_mask``,
``labels`` or ``pixel_values``) or a tuple of positional arguments (``model(*x)``). The
output may be a tensor, tuple, dict, dataclass or ``ModelOutput``; the loss of the backward
pass is the probe's fixed random projection of its main tensor (``logits`` first, then
``last_hidden_state``: ``core.outputs.main_tensor``), never the model's own ``loss``,
so the gradient entering the top has variance 1 whatever the task.

The layers read, by default (``modules=None``):

- the project's ``MLP``: its blocks, as ``core.probe`` numbers them;
- for the variance check, the model's *repeated blocks*: the members of the first
  ``nn.ModuleList`` or ``nn.Sequential`` (in ``named_modules()`` order) holding two or more
  modules of one class with parameters (GPT-2's ``transformer.h``, Llama's
  ``model.layers``, BERT's and ViT's encoder layers, ResNet's stages). A transformer's
  modules live on different scales by design (an embedding's output has variance 4e-4, the
  LayerNorm after it 1), so comparing them with each other says nothing; the blocks'
  outputs are the residual stream, whose growth from block to block is the question.
  Layer 1 is the stream *entering* the first block (its first floating input, named
  ``transformer.h.0 (input)``), so a first block that already blows the stream up is caught
  too; layers 2.. are the blocks' outputs (their main tensor);
- otherwise every module with parameters of its own (``nn.Linear``, transformers'
  ``Conv1D``, embeddings, norms, convolutions), in the order their outputs appear in the
  forward pass, named by qualified name; modules that did not run are left out. A module
  whose output is a tuple or dict (attention) is read through its tensors: every one for
  the finiteness and overflow checks, the main one for the variance check.

``modules=[...]`` names the layers instead, numbered in the order given (the parameters
blamed on one are all those under it).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from stability.core.model import MLP
from stability.core.outputs import main_tensor, tensors_in
from stability.core.pooled_probe import PooledProbe, Reader
from stability.core.probe import LayerStats, probe, projection_loss
from stability.errors import StabilityError

Inputs = torch.Tensor | Mapping[str, Any] | tuple[Any, ...]
VARIANCE, VALUES = "variance", "values"  # what the layers are read for
ROOT = "<model>"
GIVEN, BLOCKS, OWN = "given", "blocks", "own"  # how the layers were chosen
ENTRY = " (input)"  # the name suffix of the stream entering the first block


@dataclass(frozen=True)
class Layers:
    """The layers one pass read: names, modules, statistics (1-based, in the order shown)."""

    names: list[str]  # qualified names; ROOT for the model itself
    kinds: list[str]  # class names
    params: list[list[nn.Parameter]]  # the parameters whose gradients are blamed on each
    stats: list[LayerStats]
    ran: list[bool]  # whether the layer produced an output (a given module may not)
    output_kind: str  # the model's class name
    output_nonfinite: int  # non-finite values among the tensors the model returned

    def label(self, layer: int) -> str:
        """``layer 2 of 5 (transformer.h.1: GPT2Block)``."""
        i = layer - 1
        return f"layer {layer} of {len(self.stats)} ({self.names[i]}: {self.kinds[i]})"


def call(model: nn.Module, x: Inputs) -> Any:
    """``model(**x)`` for a mapping, ``model(*x)`` for a tuple, else ``model(x)``."""
    if isinstance(x, Mapping):
        return model(**x)
    if isinstance(x, tuple):
        return model(*x)
    return model(x)


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The members of the first ModuleList/Sequential of >= 2 same-class modules holding
    parameters; ``[]`` if there is none."""
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList | nn.Sequential) and len(module) >= 2:
            members = list(module)
            same = len({type(m) for m in members}) == 1
            if same and any(True for _ in members[0].parameters()):
                return members
    return []


def own_parameter_modules(model: nn.Module) -> list[nn.Module]:
    """Every module holding parameters of its own, in registration order."""
    return [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]


def _main_only(output: Any) -> list[torch.Tensor]:
    main = main_tensor(output)
    return [] if main is None else [main]


def _select(
    model: nn.Module, modules: Sequence[nn.Module] | None, purpose: str
) -> tuple[list[nn.Module], str]:
    """(modules to read, how: GIVEN, BLOCKS (the first read at its input) or OWN)."""
    if modules is not None:
        if not modules:
            raise StabilityError("modules is empty; pass None for the default or some modules")
        return list(modules), GIVEN
    if purpose == VARIANCE:
        blocks = repeated_blocks(model)
        if blocks:
            return [blocks[0], *blocks], BLOCKS
    own = own_parameter_modules(model)
    if not own:
        raise StabilityError(
            f"no module to watch: {type(model).__name__} has no parameters; pass modules="
        )
    return own, OWN


def _names(model: nn.Module, modules: Sequence[nn.Module]) -> list[str]:
    by_id = {id(m): name or ROOT for name, m in model.named_modules()}
    return [by_id.get(id(m), "?") for m in modules]


def _first_holders(params: list[list[nn.Parameter]]) -> list[list[nn.Parameter]]:
    """Each parameter under the first layer holding it only: a tied weight (GPT-2's
    ``lm_head`` is ``wte``) gathers both uses' gradients, and blaming the top one for a
    NaN made below would point at the wrong end of the backward pass."""
    seen: set[int] = set()
    out = []
    for ps in params:
        out.append([p for p in ps if id(p) not in seen])
        seen.update(id(p) for p in ps)
    return out


def measure(
    model: nn.Module,
    x: Inputs,
    modules: Sequence[nn.Module] | None = None,
    precision: str | None = None,
    purpose: str = VALUES,
) -> Layers:
    """One forward and backward pass of ``x`` through ``model``; the layers it read.

    Gradients are zeroed first and left in place afterwards (``.grad``).
    """
    if isinstance(model, MLP):
        if not isinstance(x, torch.Tensor):
            raise StabilityError(f"an MLP takes a tensor input, got {type(x).__name__}")
        stats = probe(model, x, modules=modules, precision=precision)
        blocks = list(model.layers)
        return Layers(_names(model, blocks), [type(b).__name__ for b in blocks],
                      [list(b.parameters()) for b in blocks], stats, [True] * len(stats),
                      type(model).__name__, 0)  # fmt: skip
    watched, how = _select(model, modules, purpose)
    read: Reader = _main_only if purpose == VARIANCE else tensors_in
    model.zero_grad(set_to_none=True)
    with PooledProbe(model, watched, read, precision, entry=how == BLOCKS) as p:
        output = call(model, x)
        main = main_tensor(output)
        if main is None or not main.is_floating_point():
            raise StabilityError(
                f"{type(model).__name__} returned no floating-point tensor to take a loss of "
                f"(got {type(output).__name__}); expected a tensor, tuple, dict or ModelOutput"
            )
        if main.requires_grad:
            projection_loss(main).backward()  # type: ignore[no-untyped-call]
        stats = p.results()
        order = p.order if how == OWN else list(range(len(watched)))
        ran = set(p.order)
    bad = sum(int((~torch.isfinite(t.detach())).sum()) for t in tensors_in(output))
    kept = [watched[i] for i in order]
    names = _names(model, kept)
    params = _first_holders([list(m.parameters(recurse=how != OWN)) for m in kept])
    if how == BLOCKS:
        names[0], params[0] = names[0] + ENTRY, []
    return Layers(
        names=names,
        kinds=[type(m).__name__ for m in kept],
        params=params,
        stats=[replace(stats[i], layer=k + 1) for k, i in enumerate(order)],
        ran=[i in ran for i in order],
        output_kind=type(model).__name__,
        output_nonfinite=bad,
    )
