"""The shared entry point for a user's own model: ``--model``, ``--input``, ``--target``,
``--loss``, ``--mode``.

Every command that takes a user's network (probe, doctor, gate, the pytest plugin) builds it
through this module, so a bad reference fails the same way everywhere: one
``StabilityError`` line naming the flag, the value and what went wrong (exit 2 at the CLI).
All results are plain objects: an ``nn.Module``, a ``Batch`` (``usermodel.batch``), a loss.

- ``--model pkg.module:factory`` (``--model-args '{"depth": 4}'`` as keyword arguments);
- ``--input``: a shape spec, named specs or ``pkg.module:make_batch`` (``usermodel.batch``);
- ``--target SPEC`` as ``--input``; ``--loss`` one of ``losses.CHOICES`` (``model``: the
  model's own ``loss``). Without ``--loss`` the probe's backward pass uses a fixed random
  projection (gradient entering the top ~ N(0,1)); training (``bounded=True``, the doctor)
  takes a bounded objective instead (``choose_objective``);
- ``--mode eval|train``: the model is put in that mode (default eval: dropout off, batch
  norm on its running statistics, so two runs give the same numbers).

Outputs are read by ``core.outputs``: a tensor, tuple, dict, dataclass or ``ModelOutput``.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from stability.core.outputs import main_tensor, own_loss
from stability.errors import StabilityError
from stability.usermodel.batch import Batch, check_spec, is_reference, load_input, load_target
from stability.usermodel.losses import (
    CHOICES,
    LOSSES,
    MODEL_LOSS,
    check_loss_name,
    compute_loss,
    default_target,
    load_loss,
    projection,
)
from stability.usermodel.refs import (
    one_line,
    parse_kwargs,
    quiet_stdout,
    resolve,
    user_code,
)

__all__ = ["CHOICES", "LOSSES", "MODES", "Batch", "UserSetup", "load_loss", "load_model",
           "load_setup", "parse_kwargs", "resolve", "run_forward"]  # fmt: skip

MODES = {
    "eval": "eval (dropout off, batch norm on its running statistics)",
    "train": "train (dropout on, batch norm on batch statistics)",
}
AS_BUILT = "as-built"  # a baseline from before --mode: the model as its factory left it


def load_model(ref: str, model_args: str | Mapping[str, Any] | None = None) -> nn.Module:
    """Build the user's ``nn.Module`` by calling ``factory(**model_args)``."""
    kwargs = dict(model_args) if isinstance(model_args, Mapping) else parse_kwargs(model_args)
    factory = resolve(ref, "--model")
    if not callable(factory):
        raise StabilityError(f"--model {ref!r} is a {type(factory).__name__}, not callable")
    with user_code(f"--model {ref!r}: the factory"):
        model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise StabilityError(
            f"--model {ref!r} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def run_forward(model: nn.Module, batch: Batch, model_ref: str = "the model") -> Any:
    """``model(*args, **kwargs)``; an error there means the input does not fit the model, and
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
        return batch.call(model)
    except (StabilityError, KeyboardInterrupt):
        raise
    except (Exception, SystemExit) as exc:
        where = f" in module {running[-1]}" if running else ""
        raise StabilityError(
            f"--input {batch.source!r} does not fit {model_ref}{where}: {one_line(exc)}"
        ) from None
    finally:
        for handle in handles:
            handle.remove()


def set_mode(model: nn.Module, mode: str) -> None:
    """``model.eval()`` or ``model.train()``; ``AS_BUILT`` leaves it as it is."""
    if mode == "eval":
        model.eval()
    elif mode == "train":
        model.train()


@dataclass
class UserSetup:
    """Everything the flags name, built: what probe, doctor and gate run on.

    ``loss_name`` is None for the probe's projection, ``"model"`` for the model's own loss,
    else a key of ``LOSSES``; ``objective`` says in words what the loss is."""

    model_ref: str
    model: nn.Module
    batch: Batch
    loss_name: str | None = None
    mode: str = "eval"
    objective: str = ""
    last_output: Any = field(default=None, repr=False, compare=False)

    def to(self, device: str) -> "UserSetup":
        return replace(self, model=self.model.to(device), batch=self.batch.to(device))

    def call(self, model: nn.Module | None = None) -> Any:
        """The raw output of ``model(*args, **kwargs)`` (this setup's model by default)."""
        return run_forward(model or self.model, self.batch, f"--model {self.model_ref!r}")

    def main_of(self, output: Any) -> torch.Tensor:
        """The tensor a loss is taken of (``logits`` first; ``outputs.main_tensor``)."""
        out = main_tensor(output)
        if out is None:
            raise StabilityError(f"--model {self.model_ref!r} returned no floating-point "
                                 f"tensor (got {type(output).__name__})")  # fmt: skip
        return out

    def forward(self) -> torch.Tensor:
        """The main tensor of one forward pass; the whole output is kept for ``loss_of``."""
        self.last_output = self.call()
        return self.main_of(self.last_output)

    def loss_of(self, main: torch.Tensor) -> torch.Tensor:
        """The loss of the last ``forward()`` (``main`` is its main tensor)."""
        return self.loss_from(self.last_output, main)

    def loss_from(self, output: Any, main: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of a whole output: the model's own, a named one against the target, or
        the probe's fixed random projection (``loss_name`` None)."""
        main = self.main_of(output) if main is None else main
        if self.loss_name is None:
            return projection(main)
        if self.loss_name == MODEL_LOSS:
            loss = own_loss(output)
            if loss is None:
                raise StabilityError(
                    f"--loss model: --model {self.model_ref!r} returned no loss (a Hugging Face "
                    "model computes one when the batch has labels, or give --target); name "
                    f"another --loss ({', '.join(sorted(LOSSES))})"
                )
            return loss
        return compute_loss(LOSSES[self.loss_name], self.loss_name, main, self.target_for(main))

    def target_for(self, main: torch.Tensor) -> torch.Tensor:
        """``--target`` (or the batch's legacy target), else the batch's ``labels``, else
        one made to fit (class indices for cross_entropy, standard normal otherwise)."""
        assert self.loss_name is not None and self.loss_name != MODEL_LOSS
        given = self.batch.target if self.batch.target is not None else self.batch.labels
        if given is not None:
            return given.to(main.device)
        return default_target(self.loss_name, main)


def _integer_ids(batch: Batch) -> bool:
    """The batch holds class labels or token ids: integer ``labels``, ``input_ids``, target or
    positional tensors."""
    named = [batch.kwargs.get("labels"), batch.kwargs.get("input_ids"), batch.target]
    values = [*named, *batch.args]
    return any(isinstance(v, torch.Tensor) and not v.is_floating_point() for v in values)


def choose_objective(setup: UserSetup, output: Any, main: torch.Tensor) -> str:
    """A bounded training objective when no ``--loss`` is named: the model's own loss when it
    returned one (labels in the batch), else cross_entropy when the main tensor is
    logits-like (floating, a class dimension, integer labels or ids in the batch), else mse
    against a made standard-normal target. Never the probe's (unbounded) projection."""
    if own_loss(output) is not None:
        return MODEL_LOSS
    logits = main.is_floating_point() and main.dim() >= 2 and main.shape[-1] >= 2
    return "cross_entropy" if logits and _integer_ids(setup.batch) else "mse"


def describe_objective(setup: UserSetup, main: torch.Tensor, chosen: bool) -> str:
    """The objective in words: what it is of and against what."""
    how = "chosen: no --loss" if chosen else "--loss"
    shape = tuple(main.shape)
    if setup.loss_name is None:
        return f"a fixed random projection of the output {shape} (no --loss: a unit-variance " \
            "gradient enters the top)"  # fmt: skip
    if setup.loss_name == MODEL_LOSS:
        why = "--target passed as labels" if setup.batch.target is not None else "its labels"
        return f"the model's own loss ({why}; {how})"
    if setup.batch.target is not None:
        against = f"the target {tuple(setup.batch.target.shape)}"
    elif setup.batch.labels is not None:
        against = f"the batch's labels {tuple(setup.batch.labels.shape)}"
    elif setup.loss_name == "cross_entropy":
        against = "made class indices (seeded)"
    else:
        against = "a made standard-normal target (seeded)"
    return f"{setup.loss_name} of the output {shape} against {against} ({how})"


def load_setup(
    model: str,
    model_args: str | Mapping[str, Any] | None = None,
    input: str = "",
    target: str | None = None,
    loss: str | None = None,
    seed: int = 0,
    check: bool = True,
    mode: str = "eval",
    bounded: bool = False,
    quiet: bool = False,
) -> UserSetup:
    """Build model, batch and loss from the flags' strings, the model in ``mode``. With
    ``check`` run one forward (and the loss), so an input that does not fit, or an output
    with no gradient path to the parameters, fails here in one line; ``bounded`` picks a
    training objective when ``loss`` is None (``choose_objective``). ``quiet``: the user's
    prints go to stderr."""
    if not input:
        raise StabilityError("--model needs --input (a shape like 32x64:float32 or pkg.mod:fn)")
    if loss is not None:  # cheap checks before imports
        check_loss_name(loss)
    if mode not in (*MODES, AS_BUILT):
        raise StabilityError(f"unknown --mode {mode!r}; expected one of {sorted(MODES)}")
    check_spec(input, "--input")
    if target is not None and not is_reference(target):
        check_spec(target, "--target")
    with quiet_stdout(quiet):
        torch.manual_seed(seed)  # the factory's initialisation is reproducible
        built = load_model(model, model_args)
        set_mode(built, mode)
        batch = load_input(input, seed, model=built)
        if target is not None:
            batch = replace(batch, target=load_target(target, seed + 1, built))
        if loss == MODEL_LOSS and batch.target is not None:
            batch = replace(batch, kwargs={**batch.kwargs, "labels": batch.target})
        setup = UserSetup(model, built, batch, loss, mode)
        if check:
            _check(setup, bounded and loss is None)
    return setup


def _check(setup: UserSetup, choose: bool) -> None:
    """One forward pass and loss with gradients on (so a detached output shows), then the
    model's buffers put back: BatchNorm in training mode moves its running statistics."""
    model = setup.model
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        with torch.enable_grad():
            output = setup.call()
            main = setup.main_of(output)
            trainable = any(p.requires_grad for p in model.parameters())
            if trainable and not main.requires_grad:
                raise StabilityError(
                    f"--model {setup.model_ref!r}: its output ({tuple(main.shape)} "
                    f"{str(main.dtype).removeprefix('torch.')}) has no gradient path to the "
                    "parameters (detached, integer or argmax?): nothing to probe backward"
                )
            if choose:
                setup.loss_name = choose_objective(setup, output, main)
            setup.loss_from(output, main)
            setup.objective = describe_objective(setup, main, choose)
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
