"""Weight decay and dropout, written from the notes' formulas as references for torch's.

Weight decay: SGD on ``loss + wd/2 ||w||^2`` steps ``w <- w - lr (grad + wd w)
= (1 - lr wd) w - lr grad``: the weight shrinks by ``1 - lr wd`` before the gradient step,
which is what ``torch.optim.SGD(weight_decay=wd)`` does. Dropout: zero each entry with
probability ``p`` and scale survivors by ``1 / (1 - p)`` so that ``E[dropout(x)] = x``;
identity outside training.
"""

import torch

from stability.errors import StabilityError


def _check_p(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise StabilityError(f"dropout probability p must lie in [0, 1]; got {p!r}")


def sgd_step_weight_decay(
    w: torch.Tensor, grad: torch.Tensor, lr: float, wd: float
) -> torch.Tensor:
    """One SGD step with L2 weight decay, closed form ``(1 - lr wd) w - lr grad``.

    ``grad`` is the gradient of the unpenalised loss; the decay term is the gradient of
    ``wd/2 ||w||^2``. Returns a new tensor.
    """
    if lr < 0:
        raise StabilityError(f"learning rate must be >= 0; got lr={lr!r}")
    if wd < 0:
        raise StabilityError(f"weight decay must be >= 0; got wd={wd!r}")
    return (1.0 - lr * wd) * w - lr * grad


def _keep_mask(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    # U[0, 1) >= p has probability exactly 1 - p: p = 0 keeps all, p = 1 keeps none.
    u = torch.rand(x.shape, generator=generator, dtype=torch.float64, device=x.device)
    return (u >= p).to(x.dtype)


def dropout(
    x: torch.Tensor, p: float, generator: torch.Generator | None = None, training: bool = True
) -> torch.Tensor:
    """Inverted dropout: zero with probability ``p``, scale kept entries by ``1 / (1 - p)``.

    Unbiased, ``E[out] = x``, with ``Var(out) = x^2 p / (1 - p)``. Identity when not training
    or ``p = 0``; all zeros at ``p = 1`` (where the naive rescale would divide by zero).
    """
    _check_p(p)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    return x * _keep_mask(x, p, generator) * (1.0 / (1.0 - p))


def dropout_unscaled(
    x: torch.Tensor, p: float, generator: torch.Generator | None = None, training: bool = True
) -> torch.Tensor:
    """Known-bad dropout without the ``1 / (1 - p)`` rescale: ``E[out] = (1 - p) x``, biased.

    The witness for the unbiasedness property: train and eval activations differ in scale.
    """
    _check_p(p)
    if not training:
        return x
    return x * _keep_mask(x, p, generator)
