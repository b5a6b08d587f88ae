"""Label smoothing: the notes' soft labels, torch's ``label_smoothing``, and the conversion.

The notes put 1 - eps on the true class and eps/(K-1) elsewhere; torch's ``label_smoothing=e``
puts e/K on every class (DESIGN.md). The two agree when e = eps K/(K-1); reading one for
the other builds different targets and a different loss.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from loss_helpers import F64, close64
from strategies import class_labels, logit_batches
from witness import assert_fails_on

from stability.notes.losses import (
    notes_eps_to_torch,
    smooth_labels_notes,
    smooth_labels_torch,
    stable_cross_entropy,
    torch_eps_to_notes,
)

CHAPTER = "Softmax regression and losses"

Smoother = Callable[..., torch.Tensor]  # (labels, K, eps, dtype=) -> (B, K) soft targets

# --- label smoothing ----------------------------------------------------------------------


@st.composite
def _smoothing_cases(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """(logits (B, K) float64, labels (B,), K, a fraction in [0, 1] to scale eps with)."""
    logits = draw(logit_batches(bound=20.0))
    batch, k = logits.shape
    return logits, draw(class_labels(batch, k)), k, draw(st.floats(0.0, 1.0))


def _notes_structure(target: torch.Tensor, labels: torch.Tensor, k: int, eps: float) -> bool:
    """1 - eps on the true class, eps / (K - 1) on the others, rows summing to 1."""
    true = target.gather(1, labels.unsqueeze(1)).squeeze(1)
    others = target.clone()
    others.scatter_(1, labels.unsqueeze(1), eps / (k - 1))
    return (
        close64(true, torch.full_like(true, 1 - eps))
        and close64(others, torch.full_like(others, eps / (k - 1)))
        and close64(target.sum(dim=1), torch.ones(len(labels), dtype=target.dtype))
    )


def check_notes_structure(smooth: Smoother, labels: torch.Tensor, k: int, eps: float) -> None:
    target = smooth(labels, k, eps, dtype=F64)
    assert _notes_structure(target, labels, k, eps), f"not the notes' targets at eps {eps}"


@given(_smoothing_cases())
def test_label_smoothing_notes(case: tuple[torch.Tensor, torch.Tensor, int, float]) -> None:
    _, labels, k, frac = case
    check_notes_structure(smooth_labels_notes, labels, k, eps=frac * (k - 1) / k)


def test_witness_label_smoothing_notes() -> None:
    # torch's targets at the same eps put 1 - eps + eps/K on the true class.
    assert_fails_on(smooth_labels_torch, check_notes_structure, torch.tensor([0, 2, 1]), 4, 0.1)


def _agrees_with_torch(
    logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, e: float
) -> bool:
    ours = stable_cross_entropy(logits, target).mean()
    return close64(ours, F.cross_entropy(logits, labels, label_smoothing=e))


def check_agrees_with_torch(
    smooth: Smoother, logits: torch.Tensor, labels: torch.Tensor, k: int, e: float
) -> None:
    """Our cross-entropy on ``smooth``'s targets is torch's with ``label_smoothing=e``."""
    target = smooth(labels, k, e, dtype=F64)
    assert _agrees_with_torch(logits, target, labels, e), f"!= torch at label_smoothing={e}"


@given(_smoothing_cases())
def test_label_smoothing_torch(case: tuple[torch.Tensor, torch.Tensor, int, float]) -> None:
    logits, labels, k, e = case
    target = smooth_labels_torch(labels, k, e, dtype=F64)
    assert close64(target.sum(dim=1), torch.ones(len(labels), dtype=torch.float64))
    check_agrees_with_torch(smooth_labels_torch, logits, labels, k, e)


_WITNESS_LOGITS = torch.tensor([[3.0, -1.0, 0.5, 2.0], [0.0, 4.0, -2.0, 1.0]], dtype=torch.float64)
_WITNESS_LABELS = torch.tensor([0, 2])


def test_witness_label_smoothing_torch() -> None:
    # Reading torch's e as the notes' eps builds different targets and a different loss.
    assert_fails_on(
        smooth_labels_notes, check_agrees_with_torch, _WITNESS_LOGITS, _WITNESS_LABELS, 4, 0.3
    )


def check_conversion(
    to_torch: Callable[[float, int], float],
    logits: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    eps: float,
) -> None:
    """The notes' targets at ``eps`` are torch's at ``to_torch(eps, K)``, and so is the loss."""
    e = to_torch(eps, k)
    notes = smooth_labels_notes(labels, k, eps, dtype=F64)
    assert close64(notes, smooth_labels_torch(labels, k, e, dtype=F64)), f"targets, e = {e}"
    assert _agrees_with_torch(logits, notes, labels, e), f"loss, e = {e}"


def unconverted(eps: float, k: int) -> float:
    """Known-bad: passes the notes' eps straight to torch, without the K/(K-1)."""
    return eps


@given(_smoothing_cases())
def test_label_smoothing_conversion(case: tuple[torch.Tensor, torch.Tensor, int, float]) -> None:
    logits, labels, k, frac = case
    eps = frac * (k - 1) / k
    check_conversion(notes_eps_to_torch, logits, labels, k, eps)
    e = notes_eps_to_torch(eps, k)
    assert abs(torch_eps_to_notes(e, k) - eps) <= 4 * torch.finfo(torch.float64).eps


def test_witness_label_smoothing_conversion() -> None:
    # Without the K/(K-1) the targets differ (0.7 vs 0.775 on the true class) and the loss too.
    assert_fails_on(unconverted, check_conversion, _WITNESS_LOGITS, _WITNESS_LABELS, 4, 0.3)
