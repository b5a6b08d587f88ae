"""The shared entry point for a user's own model: ``--model``, ``--input``, ``--target``,
``--loss``.

Every command that takes a user's network (probe, doctor, gate, the pytest plugin) builds it
through this module, so a bad reference fails the same way everywhere: one
``StabilityError`` line naming the flag, the value and what went wrong (exit 2 at the CLI).
All results are plain objects: an ``nn.Module``, a ``Batch`` of tensors, a loss function.

- ``--model pkg.module:factory`` (``--model-args '{"depth": 4}'`` as keyword arguments)
- ``--input 32x3x28x28:float32`` (a shape and dtype; integer dtypes take an exclusive upper
  bound, ``32x16:int64:1000`` for token ids) or ``--input pkg.module:make_batch``: a function
  of no arguments returning a tensor, an ``(input, target)`` pair, or a dict with ``input``
  (a tensor or tuple of tensors) and optionally ``target``.
- ``--target SPEC`` as ``--input``; ``--loss`` one of ``LOSSES``. Without ``--loss`` the
  backward pass uses the probe's fixed random projection (gradient entering the top ~ N(0,1)).
"""

import importlib
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from stability.core.registry import lookup
from stability.errors import StabilityError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

FLOAT_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
INT_DTYPES = {"int64": torch.int64, "int32": torch.int32}
MAX_ELEMENTS = 50_000_000  # a synthetic batch bigger than this (200 MB in float32) is a typo


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the classes on the last dimension, as a sequence model's logits
    (batch x tokens x vocabulary) come; 2-d logits are torch's usual (batch x classes)."""
    if output.dim() > 2:
        return nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))
    return nn.functional.cross_entropy(output, target)


LOSSES: dict[str, LossFn] = {
    "mse": nn.functional.mse_loss,
    "cross_entropy": cross_entropy,
    "l1": nn.functional.l1_loss,
    "huber": nn.functional.huber_loss,
}

# Frames inside torch or this package say nothing about where the user's code failed.
_NOT_USER = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))
_SHAPE = re.compile(r"^\d+(x\d+)*$")


@dataclass(frozen=True)
class TensorSpec:
    """A synthetic tensor: shape, dtype name and, for integers, the exclusive upper bound."""

    shape: tuple[int, ...]
    dtype: str
    high: int | None = None

    def make(self, seed: int = 0) -> torch.Tensor:
        """Standard normal floats (unit variance, as the probe assumes) or uniform integers."""
        gen = torch.Generator().manual_seed(seed)
        if self.dtype in INT_DTYPES:
            high = self.high if self.high is not None else 2
            return torch.randint(0, high, self.shape, generator=gen, dtype=INT_DTYPES[self.dtype])
        return torch.randn(self.shape, generator=gen).to(FLOAT_DTYPES[self.dtype])


@dataclass(frozen=True)
class Batch:
    """Positional inputs for ``model(*inputs)`` and an optional target for the loss."""

    inputs: tuple[torch.Tensor, ...]
    target: torch.Tensor | None = None
    source: str = ""  # the spec it came from, for error messages

    def to(self, device: str) -> "Batch":
        target = None if self.target is None else self.target.to(device)
        return Batch(tuple(x.to(device) for x in self.inputs), target, self.source)


def resolve(ref: str, flag: str) -> Any:
    """The object named by ``pkg.module:attr`` (``attr`` may be dotted), imported.

    The working directory is importable, as for ``python -m``: a user's ``mymodel.py`` beside
    them works with the installed ``stability`` script too."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise StabilityError(f"{flag} {ref!r}: expected pkg.module:name")
    added = os.getcwd() not in sys.path and "" not in sys.path
    if added:  # only while importing: the caller's sys.path is left as it was
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error while importing the user's module is theirs
        raise StabilityError(
            f"{flag} {ref!r}: module {module_name!r} does not import ({_one_line(exc)})"
        ) from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            where = getattr(module, "__file__", module_name)
            raise StabilityError(
                f"{flag} {ref!r}: {module_name} has no attribute {attr!r} ({where})"
            )
        obj = getattr(obj, part)
    return obj


def parse_kwargs(text: str | None, flag: str = "--model-args") -> dict[str, Any]:
    """A JSON object of keyword arguments (``None`` or empty: none)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StabilityError(f"{flag} {text!r} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise StabilityError(f"{flag} {text!r} must be a JSON object of keyword arguments")
    return value


def load_model(ref: str, model_args: str | Mapping[str, Any] | None = None) -> nn.Module:
    """Build the user's ``nn.Module`` by calling ``factory(**model_args)``."""
    kwargs = dict(model_args) if isinstance(model_args, Mapping) else parse_kwargs(model_args)
    factory = resolve(ref, "--model")
    if not callable(factory):
        raise StabilityError(f"--model {ref!r} is a {type(factory).__name__}, not callable")
    try:
        model = factory(**kwargs)
    except Exception as exc:  # the factory is the user's code: say where it failed, in one line
        raise StabilityError(f"--model {ref!r}: the factory raised {_one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise StabilityError(
            f"--model {ref!r} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def parse_tensor_spec(text: str, flag: str) -> TensorSpec:
    """``SHAPE[:DTYPE[:HIGH]]`` with SHAPE like ``32x3x28x28``; dtype float32 by default."""
    shape_text, _, rest = text.partition(":")
    dtype, _, high_text = rest.partition(":")
    dtype = dtype or "float32"
    if not _SHAPE.match(shape_text):
        raise StabilityError(
            f"{flag} {text!r}: shape {shape_text!r} is not sizes joined by 'x' (e.g. 32x3x28x28)"
        )
    shape = tuple(int(s) for s in shape_text.split("x"))
    if any(s < 1 for s in shape):
        raise StabilityError(f"{flag} {text!r}: every size must be >= 1")
    numel = 1
    for s in shape:
        numel *= s
    if numel > MAX_ELEMENTS:
        raise StabilityError(f"{flag} {text!r}: {numel} elements, more than {MAX_ELEMENTS}")
    lookup(f"{flag} dtype", dtype, {**FLOAT_DTYPES, **INT_DTYPES})
    high: int | None = None
    if dtype in INT_DTYPES:
        if not high_text.isdigit() or int(high_text) < 1:
            raise StabilityError(
                f"{flag} {text!r}: an integer dtype needs an upper bound >= 1 (e.g. {shape_text}"
                f":{dtype}:1000 for values 0..999)"
            )
        high = int(high_text)
    elif high_text:
        raise StabilityError(f"{flag} {text!r}: only integer dtypes take an upper bound")
    return TensorSpec(shape, dtype, high)


def is_reference(text: str) -> bool:
    """``pkg.module:name`` rather than a shape spec (sizes; no module name starts with a
    digit, so ``4xa`` is a bad shape, not a module)."""
    return not text[:1].isdigit()


def load_input(spec: str, seed: int = 0, flag: str = "--input") -> Batch:
    """A ``Batch`` from a shape spec (seeded) or from the user's ``make_batch()``."""
    if not is_reference(spec):
        return Batch((parse_tensor_spec(spec, flag).make(seed),), None, spec)
    make = resolve(spec, flag)
    if not callable(make):
        raise StabilityError(f"{flag} {spec!r} is a {type(make).__name__}, not callable")
    try:
        value = make()
    except Exception as exc:
        raise StabilityError(f"{flag} {spec!r}: make_batch raised {_one_line(exc)}") from None
    return _as_batch(value, spec, flag)


def _as_batch(value: Any, spec: str, flag: str) -> Batch:
    if isinstance(value, Mapping):
        if "input" not in value:
            raise StabilityError(f"{flag} {spec!r} returned a dict without an 'input' key")
        inputs, target = value["input"], value.get("target")
    elif isinstance(value, tuple | list) and len(value) == 2:
        inputs, target = value
    else:
        inputs, target = value, None
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if not (
        isinstance(inputs, tuple | list)
        and inputs
        and all(isinstance(x, torch.Tensor) for x in inputs)
    ):
        raise StabilityError(
            f"{flag} {spec!r} returned {type(value).__name__}; expected a tensor, an "
            "(input, target) pair or a dict with 'input' (and 'target')"
        )
    if target is not None and not isinstance(target, torch.Tensor):
        raise StabilityError(
            f"{flag} {spec!r}: the target is a {type(target).__name__}, not a tensor"
        )
    return Batch(tuple(inputs), target, spec)


def load_target(spec: str, seed: int = 1) -> torch.Tensor:
    """The target tensor from a shape spec or a ``pkg.module:fn`` returning one tensor."""
    if not is_reference(spec):
        return parse_tensor_spec(spec, "--target").make(seed)
    batch = load_input(spec, seed, "--target")
    if batch.target is not None or len(batch.inputs) != 1:
        raise StabilityError(f"--target {spec!r} must return one tensor")
    return batch.inputs[0]


def load_loss(name: str) -> LossFn:
    """A loss function ``loss(output, target)`` by name (see ``LOSSES``)."""
    return lookup("--loss", name, LOSSES)


def run_forward(model: nn.Module, batch: Batch, model_ref: str = "the model") -> Any:
    """``model(*batch.inputs)``; an error there means the input does not fit the model, and
    the message names the innermost module that was running (``layers.0.fc1 (Linear)``)."""
    running: list[str] = []

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        running.pop()  # returns None: a forward hook's return value would replace the output

    handles = []
    for name, module in model.named_modules():
        label = f"{name or '<model>'} ({type(module).__name__})"
        handles.append(module.register_forward_pre_hook(lambda m, a, s=label: running.append(s)))
        handles.append(module.register_forward_hook(leave))
    try:
        return model(*batch.inputs)
    except Exception as exc:
        where = f" in module {running[-1]}" if running else ""
        raise StabilityError(
            f"--input {batch.source!r} does not fit {model_ref}{where}: {_one_line(exc)}"
        ) from None
    finally:
        for handle in handles:
            handle.remove()


def compute_loss(
    loss: LossFn, name: str, output: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """``loss(output, target)``; a mismatch is one line naming both shapes."""
    try:
        value = loss(output, target)
    except Exception as exc:
        raise StabilityError(
            f"--loss {name} does not fit output {tuple(output.shape)} {output.dtype} and target "
            f"{tuple(target.shape)} {target.dtype}: {_one_line(exc)}"
        ) from None
    return value


def default_target(name: str, output: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """A target that fits ``output`` for loss ``name`` when none was given: class indices
    over the last dimension for cross_entropy, a standard normal tensor otherwise."""
    gen = torch.Generator().manual_seed(seed)
    if name == "cross_entropy":
        classes = output.shape[-1] if output.dim() > 1 else 2
        shape = output.shape[:-1] if output.dim() > 1 else output.shape
        return torch.randint(0, classes, tuple(shape), generator=gen).to(output.device)
    return torch.randn(output.shape, generator=gen).to(device=output.device, dtype=output.dtype)


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message (at file:line)``, short enough for one line of
    stderr; the place is the innermost frame of the traceback, where the user's code failed."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 200:
        first = first[:197] + "..."
    tb = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in tb if not f.filename.startswith(_NOT_USER)]
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return (f"{type(exc).__name__}: {first}" if first else type(exc).__name__) + where


def first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a loss is taken of: the output itself, or the first tensor in a tuple,
    list or dict (``logits`` first) of outputs, as models from libraries return."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        values = [output["logits"]] if "logits" in output else []
        output = [*values, *output.values()]
    if isinstance(output, tuple | list):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    return None


@dataclass(frozen=True)
class UserSetup:
    """Everything the flags name, built: what probe, doctor and gate run on."""

    model_ref: str
    model: nn.Module
    batch: Batch
    loss_name: str | None = None
    loss: LossFn | None = None

    def forward(self) -> torch.Tensor:
        """``model(*inputs)`` reduced to the one tensor the loss is taken of."""
        out = first_tensor(run_forward(self.model, self.batch, f"--model {self.model_ref!r}"))
        if out is None:
            raise StabilityError(f"--model {self.model_ref!r} returned no tensor")
        return out

    def loss_of(self, output: torch.Tensor) -> torch.Tensor:
        """The named loss against the batch's target (or one made to fit); without
        ``--loss``, the probe's fixed random projection ``sum(out * R)``."""
        if self.loss is None or self.loss_name is None:
            gen = torch.Generator().manual_seed(12_345)
            r = torch.randn(output.shape, generator=gen).to(output.device, output.dtype)
            return (output * r).sum()
        target = self.batch.target
        if target is None:
            target = default_target(self.loss_name, output)
        return compute_loss(self.loss, self.loss_name, output, target.to(output.device))


def load_setup(
    model: str,
    model_args: str | Mapping[str, Any] | None = None,
    input: str = "",
    target: str | None = None,
    loss: str | None = None,
    seed: int = 0,
    check: bool = True,
) -> UserSetup:
    """Build model, batch and loss from the flags' strings; with ``check`` run one forward
    (and the loss) without gradients, so an input that does not fit fails here, in one line."""
    if not input:
        raise StabilityError("--model needs --input (a shape like 32x64:float32 or pkg.mod:fn)")
    loss_fn = load_loss(loss) if loss is not None else None  # cheap checks before imports
    if target is not None and not is_reference(target):
        parse_tensor_spec(target, "--target")
    torch.manual_seed(seed)  # the factory's initialisation is reproducible
    built = load_model(model, model_args)
    batch = load_input(input, seed)
    if target is not None:
        batch = Batch(batch.inputs, load_target(target, seed + 1), batch.source)
    setup = UserSetup(model, built, batch, loss, loss_fn)
    if check:
        # The check must not change the model: BatchNorm in training mode updates its
        # running statistics on every forward, so buffers are put back afterwards.
        buffers = [(b, b.detach().clone()) for b in built.buffers()]
        with torch.no_grad():
            setup.loss_of(setup.forward())
            for buffer, saved in buffers:
                buffer.copy_(saved)
    return setup
