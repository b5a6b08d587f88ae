"""The fp8 training verdict: the first module whose gradient overflows or flushes.

Overflow: any gradient value beyond what the backward grid holds (E5M2: inf from torch's
cast; a saturating grid clamps it). A value that lands exactly on max is not counted: the
``tensor`` and ``row`` recipes put the amax there by design. Underflow: more than
``flush_threshold`` of the gradient's values, nonzero in the carrier, read back as zero.
"First" is the earliest step, then, within it, the module the backward pass reaches first:
the last in forward order. That is where a loss of gradient starts: once a gradient flushes,
every module below it receives what is left of it, and one whose gradient arrives already all
zero flushes nothing more (its ``grad`` row's ``zero_frac`` is 1), so forward order would name
a module far downstream of the cause, or none.
"""

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

FLUSH_THRESHOLD = 0.01  # a gradient with over 1 % of its values flushed names its module


@dataclass(frozen=True)
class Fp8Event:
    """Where fp8 training first lost a gradient: step, module, phase, what and how much."""

    kind: Literal["overflow", "underflow"]
    step: int
    module: str
    module_kind: str
    phase: str
    tensor: str
    element: str
    recipe: str
    fraction: float
    flush_threshold: float

    def line(self) -> str:
        what = "beyond the format's max" if self.kind == "overflow" else "flushed to zero"
        return (
            f"first fp8 gradient {self.kind}: step {self.step}, {self.module} "
            f"({self.module_kind}), {self.phase}: {100 * self.fraction:.3g} % of the gradient "
            f"arriving at its output {what} in {self.element} (recipe {self.recipe}; "
            f"underflow threshold {100 * self.flush_threshold:g} % flushed)"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def loss_down(row: Mapping[str, Any]) -> int:
    """Sort key of a gradient row: the order the backward pass meets the layers, from the
    loss down (``order`` counts them forward, 1 = the first matmul)."""
    return -int(row["order"])


def first_gradient_event(
    rows: Iterable[Mapping[str, Any]], flush_threshold: float = FLUSH_THRESHOLD
) -> Fp8Event | None:
    """The first (step, then backward order) gradient row that overflows or flushes too much."""
    grads = sorted(
        (r for r in rows if r["tensor"] == "grad"), key=lambda r: (r["step"], loss_down(r))
    )
    for r in grads:
        kind: Literal["overflow", "underflow"] | None = None
        if r["overflow_frac"] > 0:
            kind, fraction = "overflow", float(r["overflow_frac"])
        elif r["flush_frac"] > flush_threshold:
            kind, fraction = "underflow", float(r["flush_frac"])
        if kind is not None:
            return Fp8Event(kind, int(r["step"]), str(r["module"]), str(r["kind"]),
                            str(r["phase"]), "grad", str(r["element"]), str(r["recipe"]),
                            fraction, flush_threshold)  # fmt: skip
    return None


def no_event_line(recipe: str, steps: int, flush_threshold: float = FLUSH_THRESHOLD) -> str:
    """What the doctor says when no gradient was lost."""
    return (
        f"fp8 gradients: no module's gradient overflowed or flushed more than "
        f"{100 * flush_threshold:g} % in {steps} steps (recipe {recipe})"
    )
