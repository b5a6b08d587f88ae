"""Reference losses of the notes (L2, L1, Huber, softmax cross-entropy, label smoothing).

Written out from their formulas so the properties can hold torch's losses and autograd
against them. Every loss is element-wise (per row for cross-entropy), i.e. torch's
``reduction="none"``; reduce with ``.sum()`` or ``.mean()`` at the call site.

Torch conventions, for the record:

- ``l2_loss`` is d2l's ``squared_loss``, ``(y_hat - y)^2 / 2``; ``torch.nn.MSELoss`` has
  no 1/2, so per element ``mse = 2 * l2`` and its gradient is twice ``l2_grad``.
- ``l1_loss`` equals ``torch.nn.L1Loss``; at a zero residual both use the subgradient 0.
- ``huber_loss(r, delta)`` is the robust form ``|r| - delta/2`` if ``|r| > delta`` else
  ``r^2 / (2 delta)``. That is exactly ``torch.nn.SmoothL1Loss(beta=delta)``, while
  ``torch.nn.HuberLoss(delta)`` is ``delta`` times it; all three coincide at ``delta = 1``
  (d2l's Huber loss).
- Label smoothing: the notes put ``1 - eps`` on the true class and ``eps / (K - 1)`` on
  each other class; torch's ``label_smoothing=e`` mixes in the uniform distribution, ``e / K``
  everywhere plus ``1 - e`` on the true class. They agree when ``e = eps * K / (K - 1)``.
"""

import torch

from stability.errors import StabilityError

DEFAULT_HUBER_DELTA = 1.0  # d2l's Huber loss; equals SmoothL1Loss() and HuberLoss() there


def _check_delta(delta: float) -> None:
    if not delta > 0:
        raise StabilityError(f"Huber delta must be > 0; got {delta!r}")


def l2_loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d2l's squared loss ``(y_hat - y)^2 / 2``: the 1/2 makes its gradient the residual."""
    return (y_hat - y) ** 2 / 2


def l2_grad(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d l2_loss / d y_hat = the residual ``y_hat - y``."""
    return y_hat - y


def l1_loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Absolute error ``|y_hat - y|``: a constant-size gradient far from the target."""
    return (y_hat - y).abs()


def l1_grad(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d l1_loss / d y_hat = ``sign(y_hat - y)``, with torch's subgradient 0 at a zero residual."""
    return torch.sign(y_hat - y)


def huber_loss(r: torch.Tensor, delta: float = DEFAULT_HUBER_DELTA) -> torch.Tensor:
    """Huber's robust loss of the residual ``r = y_hat - y`` (= SmoothL1Loss(beta=delta)).

    Quadratic ``r^2 / (2 delta)`` inside ``|r| <= delta``, linear ``|r| - delta/2`` outside;
    value (delta/2) and slope (+-1) agree at ``|r| = delta``, so L1's kink at 0 is gone.
    """
    _check_delta(delta)
    a = r.abs()
    return torch.where(a > delta, a - delta / 2, r**2 / (2 * delta))


def huber_grad(r: torch.Tensor, delta: float = DEFAULT_HUBER_DELTA) -> torch.Tensor:
    """d huber_loss / d r = the clipped residual ``clamp(r / delta, -1, 1)``."""
    _check_delta(delta)
    return torch.clamp(r / delta, -1.0, 1.0)


def softmax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax with the row maximum subtracted first, so ``exp`` never sees a positive number."""
    shifted = logits - logits.amax(dim=dim, keepdim=True).detach()
    e = shifted.exp()
    return e / e.sum(dim=dim, keepdim=True)


def naive_softmax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Textbook ``exp(o) / sum exp(o)``: overflows to inf/nan once a logit passes ~88 in float32.

    Kept as the witness that the max subtraction in ``softmax`` is needed.
    """
    e = logits.exp()
    return e / e.sum(dim=dim, keepdim=True)


def log_sum_exp(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``log sum exp(o)`` as ``m + log sum exp(o - m)`` with ``m`` the maximum: never overflows.

    ``m`` is detached: its contributions to the gradient cancel exactly (``1 - sum softmax``).
    """
    m = logits.amax(dim=dim, keepdim=True).detach()
    return (m + (logits - m).exp().sum(dim=dim, keepdim=True).log()).squeeze(dim)


def stable_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy ``-sum_k t_k log softmax(o)_k`` via log-sum-exp.

    ``logits`` and ``target_probs`` are (batch, K); returns (batch,). Equals
    ``torch.nn.functional.cross_entropy(logits, target_probs, reduction="none")``.
    """
    log_probs = logits - log_sum_exp(logits, dim=-1).unsqueeze(-1)
    return -(target_probs * log_probs).sum(dim=-1)


def naive_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy as ``-sum t log(naive_softmax(o))``: the witness that overflows."""
    return -(target_probs * naive_softmax(logits, dim=-1).log()).sum(dim=-1)


def cross_entropy_grad(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """d stable_cross_entropy / d logits = ``softmax(o) - t`` for targets whose rows sum to 1."""
    return softmax(logits, dim=-1) - target_probs


def _check_labels(labels: torch.Tensor, k: int) -> None:
    if k < 2:
        raise StabilityError(f"label smoothing needs k >= 2 classes; got k={k!r}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise StabilityError(f"labels must be an integer tensor; got dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        lo, hi = int(labels.min()), int(labels.max())
        raise StabilityError(f"labels must lie in [0, {k - 1}]; got values in [{lo}, {hi}]")


def _check_fraction(name: str, value: float, upper: float = 1.0) -> None:
    if not 0.0 <= value <= upper:
        raise StabilityError(f"{name} must lie in [0, {upper:g}]; got {value!r}")


def smooth_labels_notes(
    labels: torch.Tensor, k: int, eps: float, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The notes' soft labels: ``1 - eps`` on the true class, ``eps / (k - 1)`` on the others.

    ``labels`` holds class indices, shape (batch,); returns (batch, k) rows summing to 1, in
    ``dtype`` (default: torch's default dtype).
    """
    _check_labels(labels, k)
    _check_fraction("eps", eps)
    one_hot = torch.nn.functional.one_hot(labels.long(), k).to(dtype or torch.get_default_dtype())
    return one_hot * (1.0 - eps) + (1.0 - one_hot) * (eps / (k - 1))


def smooth_labels_torch(
    labels: torch.Tensor, k: int, e: float, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """torch's ``label_smoothing=e`` target: ``e / k`` everywhere, plus ``1 - e`` on the truth."""
    _check_labels(labels, k)
    _check_fraction("label_smoothing", e)
    one_hot = torch.nn.functional.one_hot(labels.long(), k).to(dtype or torch.get_default_dtype())
    return one_hot * (1.0 - e) + e / k


def notes_eps_to_torch(eps: float, k: int) -> float:
    """torch's ``label_smoothing`` giving the notes' targets for ``eps``: ``eps * k / (k - 1)``.

    torch accepts at most 1, so ``eps`` may be at most ``(k - 1) / k`` (uniform targets).
    """
    if k < 2:
        raise StabilityError(f"label smoothing needs k >= 2 classes; got k={k!r}")
    _check_fraction("eps", eps, upper=(k - 1) / k)
    return eps * k / (k - 1)


def torch_eps_to_notes(e: float, k: int) -> float:
    """Inverse of ``notes_eps_to_torch``: the notes' ``eps = e * (k - 1) / k``."""
    if k < 2:
        raise StabilityError(f"label smoothing needs k >= 2 classes; got k={k!r}")
    _check_fraction("label_smoothing", e)
    return e * (k - 1) / k
