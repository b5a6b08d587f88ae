"""What each module of a user's network is for, so it is judged by what it should do.

A per-module verdict is only right if it knows the module's job. A LayerNorm resets the
scale to its gain's, whatever it is fed; an embedding outputs its table's scale; a residual
branch may start near zero on purpose (zero-init, layer scale); a rotary embedding has no
parameters to be wrong. So each module gets a *role*:

- ``parameter-free``: no parameters at all (rotary embeddings, activations, pooling): only
  its numerics (inf/NaN, float16 range) are judged.
- ``frozen``: parameters, none trainable (a frozen positional table): it gets no gradient
  by design, so a missing gradient is not "vanishing".
- ``norm``: a per-sample normaliser (LayerNorm, RMSNorm, GroupNorm; BatchNorm in training
  mode): its output's mean square should be about ``mean(gain^2) + mean(bias^2)``.
- ``embedding``: an ``nn.Embedding``: its output's mean square is its table's.
- ``block``: a member of a *stack*, the repeated layers the signal travels through (see
  ``find_stacks``): judged by the stream's growth across the stack.
- ``layer``: anything else with trainable parameters: judged by its own gain.

``no-gradient`` is assigned after the backward pass (``probe``): trainable parameters, yet
neither its output nor its parameters received a gradient (a pooler the loss does not use).
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

ROLES = ("parameter-free", "frozen", "no-gradient", "norm", "embedding", "block", "layer")
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_PER_SAMPLE_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.LocalResponseNorm)


@dataclass(frozen=True)
class Stack:
    """A run of repeated layers: ``members`` are qualified names, in registration order."""

    name: str
    members: tuple[str, ...]


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def find_stacks(model: nn.Module) -> list[Stack]:
    """The model's stacks: every ``ModuleList``/``Sequential`` whose parameter-holding
    children (at least two) all share one class, outermost first; a stack inside a member
    of another is part of that member (a ResNet stage's layers), not a stack of its own.

    Transformers keep their blocks so (``transformer.h``, ``model.layers``,
    ``encoder.block``); a plain ``Sequential`` MLP is a stack of its Linears."""
    stacks: list[Stack] = []
    inside: list[str] = []  # members found so far: nothing under them is a stack
    for name, module in model.named_modules():
        if not isinstance(module, nn.Sequential | nn.ModuleList):
            continue
        if any(name.startswith(m + ".") for m in inside):
            continue
        held = [(k, c) for k, c in module.named_children() if _has_params(c)]
        if len(held) < 2 or len({type(c) for _, c in held}) != 1:
            continue
        prefix = f"{name}." if name else ""
        members = tuple(prefix + k for k, _ in held)
        stacks.append(Stack(name or "<model>", members))
        inside.extend(members)
    return stacks


def is_norm(module: nn.Module) -> bool:
    """A per-sample normaliser: torch's, or any class named like one (``LlamaRMSNorm``,
    ``T5LayerNorm``) with a gain vector and no submodules."""
    if isinstance(module, _PER_SAMPLE_NORMS):
        return True
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.training  # in eval mode BatchNorm is an affine map of running stats
    name = type(module).__name__.lower()
    weight = getattr(module, "weight", None)
    leaf = not any(True for _ in module.children())
    return leaf and name.endswith("norm") and isinstance(weight, torch.Tensor) and weight.dim() == 1


def static_role(module: nn.Module) -> str:
    """The role known before running (``no-gradient`` and ``block`` come later)."""
    params = list(module.parameters())
    if not params:
        return "parameter-free"
    if not any(p.requires_grad for p in params):
        return "frozen"
    if is_norm(module):
        return "norm"
    if isinstance(module, nn.Embedding):
        return "embedding"
    return "layer"


def expected_mean_square(module: nn.Module, role: str) -> float:
    """What the module's output mean square should be, where that is known: a norm's
    ``mean(gain^2) + mean(bias^2)`` (the normalised values have unit mean square per
    sample), an embedding's table ``mean(W^2)``; NaN elsewhere."""
    with torch.no_grad():
        if role == "norm":
            gain = getattr(module, "weight", None)
            bias = getattr(module, "bias", None)
            g2 = float(gain.double().pow(2).mean()) if isinstance(gain, torch.Tensor) else 1.0
            b2 = float(bias.double().pow(2).mean()) if isinstance(bias, torch.Tensor) else 0.0
            return g2 + b2
        if role == "embedding" and isinstance(module, nn.Embedding):
            return float(module.weight.double().pow(2).mean())
    return math.nan


def norm_eps(module: nn.Module) -> float:
    """The norm's epsilon (``eps``, or transformers' ``variance_epsilon``); NaN if unnamed."""
    for key in ("eps", "variance_epsilon", "epsilon"):
        value = getattr(module, key, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return math.nan


def bias_mean_square(module: nn.Module) -> float:
    """``mean(bias^2)`` of the module's own 1-d ``bias`` (0 without one): what a linear
    map adds to its output whatever its input, so its gain is judged without it."""
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor) and bias.dim() == 1 and bias.numel():
        with torch.no_grad():
            return float(bias.detach().double().pow(2).mean())
    return 0.0


def smallest_scale(model: nn.Module, name: str) -> tuple[str, float] | None:
    """The smallest own parameter of the module ``name`` or of one of its ancestors whose
    max |value| is below ``1e-3`` (biases and all-zero tensors left out): a layer scale
    (ConvNeXt's 1e-6) that multiplies a branch, and so its gradient, by that much. None if
    there is none. Its qualified name and max |value|."""
    modules = dict(model.named_modules())
    parts = name.split(".") if name else []
    found: tuple[str, float] | None = None
    with torch.no_grad():
        for depth in range(len(parts), -1, -1):
            prefix = ".".join(parts[:depth])
            for key, p in modules[prefix].named_parameters(recurse=False):
                if p.numel() == 0 or not p.is_floating_point() or key.endswith("bias"):
                    continue
                top = float(p.detach().abs().max())
                if 0 < top < 1e-3 and (found is None or top < found[1]):
                    found = (f"{prefix}.{key}" if prefix else key, top)
    return found


def mode_notes(model: nn.Module, mode: str) -> list[str]:
    """What the mode means for this model that a reader should know: in eval mode, a
    BatchNorm that has never seen a batch normalises by its initial running statistics
    (mean 0, variance 1), so it is the identity and the network is not the one that trains."""
    if mode != "eval":
        return []
    fresh = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.track_running_stats
        and m.num_batches_tracked is not None
        and int(m.num_batches_tracked) == 0
    ]
    if not fresh:
        return []
    names = ", ".join(fresh[:3]) + (", ..." if len(fresh) > 3 else "")
    return [
        f"note: {len(fresh)} BatchNorm modules ({names}) have never seen a batch: in eval "
        "mode they pass their input through unnormalised; --mode train normalises as "
        "training does"
    ]
