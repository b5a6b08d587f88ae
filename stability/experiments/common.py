"""What every experiment shares: its sizes (quick or full), its seeds, its result.

An experiment is a pure function of (seeds, quick, device) returning one tidy DataFrame,
the rows that go to the store and the CSV. Everything else (the claim counted over seeds,
the figure) is computed from those rows alone, so the report can redraw and re-judge a
stored run without training anything.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure

from stability.errors import StabilityError


@dataclass(frozen=True)
class Claim:
    """A statement counted over seeds: it held in ``held`` of ``seeds``, and must hold in
    at least ``needed`` of them (the property's bar) for the experiment to agree with the
    notes."""

    text: str
    held: int
    seeds: int
    needed: int

    @property
    def ok(self) -> bool:
        return self.held >= self.needed

    def line(self) -> str:
        mark = "holds" if self.ok else "FAILS"
        return f"{self.text}: {self.held} of {self.seeds} seeds (needs {self.needed}) {mark}"

    def as_dict(self) -> dict[str, object]:
        return {"claim": self.text, "held": self.held, "seeds": self.seeds,
                "needed": self.needed, "ok": self.ok}  # fmt: skip


def needed(seeds: int, fraction: float = 0.9) -> int:
    """The bar for a claim over ``seeds`` seeds: ``ceil(fraction * seeds)``, at least 1."""
    return max(1, math.ceil(round(fraction * seeds, 9)))  # 0.9 * 10 is 9.000000000000002


RunFn = Callable[[Sequence[int], bool, str], pd.DataFrame]
ClaimsFn = Callable[[pd.DataFrame], list[Claim]]
DrawFn = Callable[[pd.DataFrame], Figure]


@dataclass(frozen=True)
class Experiment:
    """One experiment: how to run it, judge it and draw it, and its default seed counts."""

    name: str
    title: str
    run: RunFn
    claims: ClaimsFn
    draw: DrawFn
    quick_seeds: int
    full_seeds: int
    conclusion: str  # what a reader should conclude when the claims hold


def seed_list(count: int) -> list[int]:
    """Seeds ``0 .. count - 1``; a count below 1 is refused in one line."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise StabilityError(f"--seeds must be an integer >= 1, got {count!r}")
    return list(range(count))
