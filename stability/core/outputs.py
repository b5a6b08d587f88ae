"""What a model returns, as libraries return it: a tensor, a tuple, a dict, a dataclass or a
Hugging Face ``ModelOutput``.

Every command that reads a user's output (probe, doctor, gate, watch, ``stability.testing``)
goes through here, so a ``CausalLMOutputWithPast`` is read the same way everywhere:

- ``tensors_in(output)``: every floating-point tensor, recursively, in order;
- ``main_tensor(output)``: the tensor a loss is taken of: ``logits`` if there is one, else
  ``last_hidden_state``, else the first floating tensor that is not a ``loss``;
- ``own_loss(output)``: the model's own ``loss`` field (HF models compute it when ``labels``
  are passed), or None.

A ``ModelOutput`` is an ``OrderedDict`` whose unset fields are absent, so mappings are read
by their items; plain dataclasses by their fields. Other objects (caches, strings) hold no
tensors for this purpose.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

# The fields a loss is taken of, in order of preference: what the model predicts.
MAIN_FIELDS = ("logits", "prediction_logits", "last_hidden_state", "pooler_output")


def fields_of(output: Any) -> list[tuple[str, Any]]:
    """``(name, value)`` pairs of a mapping or dataclass; ``[]`` for anything else."""
    if isinstance(output, Mapping):
        return [(str(k), v) for k, v in output.items()]
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return [(f.name, getattr(output, f.name)) for f in dataclasses.fields(output)]
    return []


def tensors_in(output: Any, floating: bool = True) -> list[torch.Tensor]:
    """Every tensor in ``output`` (nested tuples, lists, mappings, dataclasses), in order;
    only floating-point ones unless ``floating`` is False."""
    if isinstance(output, torch.Tensor):
        return [output] if (output.is_floating_point() or not floating) else []
    if isinstance(output, tuple | list):
        return [t for item in output for t in tensors_in(item, floating)]
    return [t for _, v in fields_of(output) for t in tensors_in(v, floating)]


def main_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a loss is taken of (see the module docstring); None if there is none."""
    if isinstance(output, torch.Tensor):
        return output
    named = dict(fields_of(output))
    for key in MAIN_FIELDS:
        value = named.get(key)
        if isinstance(value, torch.Tensor):
            return value
    if named:
        rest = [v for k, v in named.items() if k != "loss"]
        found = tensors_in(rest)
        return found[0] if found else None
    found = tensors_in(output)
    return found[0] if found else None


def own_loss(output: Any) -> torch.Tensor | None:
    """The model's own scalar ``loss`` field, or None when it has none (or it is unset)."""
    value = dict(fields_of(output)).get("loss")
    return value if isinstance(value, torch.Tensor) else None
