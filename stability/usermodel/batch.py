"""``--input``: the batch a user's model is called with, in every form a batch comes in.

A ``Batch`` is positional arguments, keyword arguments and an optional target:
``batch.call(model)`` is ``model(*args, **kwargs)``. ``--input`` is one of

- a shape spec, ``32x3x28x28:float32`` (standard normal floats; integers take an exclusive
  upper bound, ``32x16:int64:1000``, or without one the model's ``config.vocab_size``);
- named shape specs, ``input_ids=2x12:int64:128,attention_mask=2x12:int64:2``: keyword
  arguments, as a Hugging Face model takes them;
- ``pkg.module:make_batch``, a function of no arguments (or a DataLoader, or any iterable:
  its first batch) returning
  - a tensor: ``model(x)``;
  - a mapping: keyword arguments, ``model(**batch)`` (a legacy dict with an ``input`` key
    keeps its old meaning: ``input``, a tensor or tuple, and an optional ``target``);
  - an ``(args_tuple, kwargs_dict)`` pair;
  - exactly two tensors, ``(input, target)``: the legacy pair, kept for compatibility (two
    positional tensors are ``((a, b), {})``);
  - any other tuple or list: positional arguments (``None`` allowed among them).

An encoder-decoder model (``config.is_encoder_decoder``) probed from a spec gets
``decoder_input_ids`` made for it (``DECODER_TOKENS`` ids below its vocabulary size), said in
``Batch.notes``.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from stability.core.registry import lookup
from stability.errors import StabilityError
from stability.usermodel.refs import resolve, user_code

FLOAT_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
INT_DTYPES = {"int64": torch.int64, "int32": torch.int32}
MAX_ELEMENTS = 50_000_000  # a synthetic batch bigger than this (200 MB in float32) is a typo
DECODER_TOKENS = 4  # the made decoder_input_ids' length: short, the encoder is what is probed
_SHAPE = re.compile(r"^\d+(x\d+)*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DECODER_GIVEN = ("decoder_input_ids", "decoder_inputs_embeds", "labels")


@dataclass(frozen=True)
class TensorSpec:
    """A synthetic tensor: shape, dtype name and, for integers, the exclusive upper bound
    (``None``: the model's vocabulary size, see ``bound``)."""

    shape: tuple[int, ...]
    dtype: str
    high: int | None = None
    text: str = ""

    def make(self, seed: int = 0, high: int | None = None) -> torch.Tensor:
        """Standard normal floats (unit variance, as the probe assumes) or uniform integers
        below ``self.high`` (else ``high``)."""
        gen = torch.Generator().manual_seed(seed)
        if self.dtype in INT_DTYPES:
            bound = self.high if self.high is not None else high
            assert bound is not None, "an unbounded integer spec needs a bound to make"
            return torch.randint(0, bound, self.shape, generator=gen, dtype=INT_DTYPES[self.dtype])
        return torch.randn(self.shape, generator=gen).to(FLOAT_DTYPES[self.dtype])


@dataclass(frozen=True)
class Batch:
    """``model(*args, **kwargs)`` and an optional target for the loss."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    target: torch.Tensor | None = None
    source: str = ""  # the spec it came from, for error messages
    notes: tuple[str, ...] = ()  # what was made for it (decoder ids), for the output

    def to(self, device: str) -> "Batch":
        def move(x: Any) -> Any:
            return x.to(device) if isinstance(x, torch.Tensor) else x

        return replace(
            self,
            args=tuple(move(x) for x in self.args),
            kwargs={k: move(v) for k, v in self.kwargs.items()},
            target=None if self.target is None else self.target.to(device),
        )

    def call(self, model: nn.Module) -> Any:
        return model(*self.args, **self.kwargs)

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor given to the model, positional first."""
        values = [*self.args, *self.kwargs.values()]
        return [v for v in values if isinstance(v, torch.Tensor)]

    @property
    def labels(self) -> torch.Tensor | None:
        value = self.kwargs.get("labels")
        return value if isinstance(value, torch.Tensor) else None

    def describe(self) -> str:
        """``input_ids 2x12 int64, attention_mask 2x12 int64``: what the model is given."""
        parts = [(f"arg {i}", v) for i, v in enumerate(self.args)] + list(self.kwargs.items())
        return ", ".join(f"{name} {_shape(v)}" for name, v in parts)


def _shape(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        size = "x".join(str(s) for s in value.shape) or "scalar"
        return f"{size} {str(value.dtype).removeprefix('torch.')}"
    return type(value).__name__


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
    if dtype in INT_DTYPES and high_text:
        if not high_text.isdigit() or int(high_text) < 1:
            raise StabilityError(
                f"{flag} {text!r}: an integer dtype needs an upper bound >= 1 (e.g. {shape_text}"
                f":{dtype}:1000 for values 0..999)"
            )
        high = int(high_text)
    elif high_text:
        raise StabilityError(f"{flag} {text!r}: only integer dtypes take an upper bound")
    return TensorSpec(shape, dtype, high, text)


def parse_named_specs(text: str, flag: str) -> dict[str, TensorSpec]:
    """``name=SPEC,name=SPEC``: keyword arguments, each a shape spec."""
    specs: dict[str, TensorSpec] = {}
    for part in text.split(","):
        name, sep, spec = part.partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name):
            raise StabilityError(
                f"{flag} {text!r}: {part!r} is not name=SHAPE[:DTYPE[:HIGH]] (e.g. "
                "input_ids=2x12:int64:128,attention_mask=2x12:int64:2)"
            )
        if name in specs:
            raise StabilityError(f"{flag} {text!r}: {name!r} is given twice")
        specs[name] = parse_tensor_spec(spec.strip(), f"{flag} {name}")
    return specs


def is_named(text: str) -> bool:
    """Named shape specs hold ``=``; a ``pkg.module:name`` reference never does."""
    return "=" in text


def is_reference(text: str) -> bool:
    """``pkg.module:name`` rather than a shape spec (sizes; no module name starts with a
    digit, so ``4xa`` is a bad shape, not a module)."""
    return not is_named(text) and not text[:1].isdigit()


def check_spec(text: str, flag: str) -> None:
    """Parse a spec (not a reference) now, before any import: a typo costs nothing."""
    if is_named(text):
        parse_named_specs(text, flag)
    elif not is_reference(text):
        parse_tensor_spec(text, flag)


def vocab_size(model: nn.Module | None) -> int | None:
    """``model.config.vocab_size`` when the model has one (Hugging Face models do)."""
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 1 else None


def make_spec(spec: TensorSpec, seed: int, flag: str, model: nn.Module | None) -> torch.Tensor:
    """The tensor of ``spec``; an unbounded integer spec takes the model's vocabulary size."""
    high = None
    if spec.dtype in INT_DTYPES and spec.high is None:
        high = vocab_size(model)
        if high is None:
            shape = spec.text.partition(":")[0]
            raise StabilityError(
                f"{flag} {spec.text!r}: an integer dtype needs an upper bound >= 1 (e.g. "
                f"{shape}:{spec.dtype}:1000 for values 0..999; a model with config.vocab_size "
                "gives its own)"
            )
    return spec.make(seed, high)


def load_input(
    spec: str, seed: int = 0, flag: str = "--input", model: nn.Module | None = None
) -> Batch:
    """A ``Batch`` from a shape spec, named specs (seeded) or the user's ``make_batch``."""
    if is_named(spec):
        named = parse_named_specs(spec, flag)
        kwargs = {k: make_spec(s, seed + i, f"{flag} {k}", model)
                  for i, (k, s) in enumerate(named.items())}  # fmt: skip
        return _with_decoder_ids(Batch((), kwargs, None, spec), model, seed)
    if not is_reference(spec):
        x = make_spec(parse_tensor_spec(spec, flag), seed, flag, model)
        return _with_decoder_ids(Batch((x,), {}, None, spec), model, seed)
    return as_batch(first_batch(resolve(spec, flag), spec, flag), spec, flag)


def first_batch(obj: Any, spec: str, flag: str) -> Any:
    """What ``obj`` gives: called if it is a function, its first item if it is a DataLoader
    or other iterable (not a tensor, mapping, tuple or list, which are batches)."""
    value = obj
    if callable(obj) and not _is_loader(obj):
        with user_code(f"{flag} {spec!r}: make_batch"):
            value = obj()
    if _is_loader(value):
        with user_code(f"{flag} {spec!r}: its first batch"):
            try:
                return next(iter(value))
            except StopIteration:
                raise StabilityError(f"{flag} {spec!r} gave an empty iterable") from None
    if value is obj and callable(obj) is False:
        raise StabilityError(f"{flag} {spec!r} is a {type(obj).__name__}, not callable")
    return value


def _is_loader(value: Any) -> bool:
    batchlike = (torch.Tensor, Mapping, tuple, list, str, bytes)
    return isinstance(value, Iterable) and not isinstance(value, batchlike)


def as_batch(value: Any, spec: str, flag: str) -> Batch:
    """The ``Batch`` a returned value means (see the module docstring)."""
    target: Any = None
    kwargs: dict[str, Any] = {}
    if isinstance(value, Mapping) and "input" in value:  # the legacy form
        args, target = value["input"], value.get("target")
        args = (args,) if isinstance(args, torch.Tensor) else args
    elif isinstance(value, Mapping):
        kwargs = {str(k): v for k, v in value.items()}
        args = ()
    elif isinstance(value, torch.Tensor):
        args = (value,)
    elif (
        isinstance(value, tuple | list)
        and len(value) == 2
        and isinstance(value[0], tuple | list)
        and isinstance(value[1], Mapping)
    ):
        args, kwargs = tuple(value[0]), {str(k): v for k, v in value[1].items()}
    elif (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(x, torch.Tensor) for x in value)
    ):
        args, target = (value[0],), value[1]  # (input, target): kept for compatibility
    elif isinstance(value, tuple | list):
        args = tuple(value)
    else:
        args = None
    if not isinstance(args, tuple | list) or not (args or kwargs):
        raise StabilityError(
            f"{flag} {spec!r} returned {type(value).__name__}; expected a tensor, a dict of "
            "keyword arguments, a tuple of positional arguments, (args, kwargs), (input, "
            "target) or a DataLoader"
        )
    if not any(isinstance(x, torch.Tensor) for x in [*args, *kwargs.values()]):
        raise StabilityError(f"{flag} {spec!r} returned no tensor to call the model with")
    if target is not None and not isinstance(target, torch.Tensor):
        raise StabilityError(
            f"{flag} {spec!r}: the target is a {type(target).__name__}, not a tensor"
        )
    return Batch(tuple(args), kwargs, target, spec)


def _with_decoder_ids(batch: Batch, model: nn.Module | None, seed: int) -> Batch:
    """An encoder-decoder model needs decoder inputs: ids made for it, said in the notes."""
    config = getattr(model, "config", None)
    if not getattr(config, "is_encoder_decoder", False) or any(
        k in batch.kwargs for k in _DECODER_GIVEN
    ):
        return batch
    high = vocab_size(model) or 2
    rows = batch.tensors()[0].shape[0] if batch.tensors() else 1
    gen = torch.Generator().manual_seed(seed + 7)
    ids = torch.randint(0, high, (rows, DECODER_TOKENS), generator=gen)
    note = (
        f"decoder_input_ids {rows}x{DECODER_TOKENS} made for the encoder-decoder model "
        f"(uniform ids below its vocab_size {high})"
    )
    return replace(batch, kwargs={**batch.kwargs, "decoder_input_ids": ids},
                   notes=(*batch.notes, note))  # fmt: skip


def load_target(spec: str, seed: int = 1, model: nn.Module | None = None) -> torch.Tensor:
    """The target tensor from a shape spec or a ``pkg.module:fn`` returning one tensor."""
    if not is_reference(spec):
        if is_named(spec):
            raise StabilityError(f"--target {spec!r}: a target is one tensor, not named specs")
        return make_spec(parse_tensor_spec(spec, "--target"), seed, "--target", model)
    value = first_batch(resolve(spec, "--target"), spec, "--target")
    if not isinstance(value, torch.Tensor):
        raise StabilityError(f"--target {spec!r} must return one tensor, not "
                             f"{type(value).__name__}")  # fmt: skip
    return value
