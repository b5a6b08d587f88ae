"""``--loss``: the named losses a user's output is trained or probed with, and their targets.

``model`` is the model's own ``loss`` (a Hugging Face model computes it when ``labels`` are
in the batch); the others take the main output tensor (``logits`` first) and a target. A
target is checked against the output before the loss runs: a shape that would broadcast
(``mse`` of a (4, 3) output against a (4,) target averages the wrong thing, silently) is
refused in one line naming both shapes.
"""

from collections.abc import Callable

import torch
from torch import nn

from stability.core.registry import lookup
from stability.errors import StabilityError
from stability.usermodel.refs import one_line

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
IGNORE_INDEX = -100  # torch's and Hugging Face's label for "no loss here" (padding)
MODEL_LOSS = "model"


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the classes on the last dimension, as a sequence model's logits
    (batch x tokens x vocabulary) come; 2-d logits are torch's usual (batch x classes).
    Labels of -100 are ignored (padding), as torch and Hugging Face do."""
    if output.dim() > 2:
        flat = output.reshape(-1, output.shape[-1])
        shape = (-1,) if not target.is_floating_point() else (-1, output.shape[-1])
        return nn.functional.cross_entropy(flat, target.reshape(shape), ignore_index=IGNORE_INDEX)
    return nn.functional.cross_entropy(output, target, ignore_index=IGNORE_INDEX)


LOSSES: dict[str, LossFn] = {
    "mse": nn.functional.mse_loss,
    "cross_entropy": cross_entropy,
    "l1": nn.functional.l1_loss,
    "huber": nn.functional.huber_loss,
}
CHOICES = (*sorted(LOSSES), MODEL_LOSS)


def load_loss(name: str) -> LossFn:
    """A loss function ``loss(output, target)`` by name (see ``LOSSES``)."""
    return lookup("--loss", name, LOSSES)


def check_loss_name(name: str) -> None:
    """``name`` is one of ``CHOICES``; one line naming them otherwise."""
    lookup("--loss", name, {c: c for c in CHOICES})


def _misfit(name: str, output: torch.Tensor, target: torch.Tensor) -> str | None:
    """Why ``target`` does not fit ``output`` for loss ``name``; None when it does."""
    if name != "cross_entropy":
        if target.shape != output.shape:
            return "the target's shape would broadcast against the output's"
        return None
    if target.is_floating_point():  # class probabilities: the output's own shape
        fits = target.shape == output.shape
        return None if fits else "class probabilities need the output's shape"
    classes_last = output.shape[:-1] if output.dim() > 2 else output.shape[:1]
    if output.dim() >= 2 and target.shape != classes_last:
        return f"class indices need shape {tuple(classes_last)}"
    return None


def compute_loss(
    loss: LossFn, name: str, output: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """``loss(output, target)``; a mismatch is one line naming both shapes."""
    why = _misfit(name, output, target)
    try:
        if why is not None:
            raise StabilityError(why)
        value = loss(output, target)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, StabilityError) else one_line(exc)
        raise StabilityError(
            f"--loss {name} does not fit output {tuple(output.shape)} {output.dtype} and target "
            f"{tuple(target.shape)} {target.dtype}: {reason}"
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


def projection(output: torch.Tensor, seed: int = 12_345) -> torch.Tensor:
    """The probe's loss without ``--loss``: ``sum(out * R)``, R fixed and standard normal,
    so the gradient entering the top has variance 1 (unbounded: for probing, not training)."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(output.shape, generator=gen).to(output.device, output.dtype)
    return (output * r).sum()
