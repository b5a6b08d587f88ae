"""Scaling recipes for plain fp8: which scale multiplies a tensor before it is cast.

``none`` casts as is; ``tensor`` is dynamic per-tensor amax scaling, ``scale = max / amax``
(Transformer Engine's and torchao's "dynamic"); ``row`` takes the amax of each row (the last
dimension's slices); ``delayed:H`` scales by the amax of the last H steps instead of the
current one (``:max``, the default, over the history; ``:recent``, the latest step), which
saves a reduction per step and overflows when the signal grows faster than the history.
Microscaled formats carry their own block scale, so a recipe applies to plain fp8 only.
"""

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from stability.errors import StabilityError

RecipeKind = Literal["none", "tensor", "row", "delayed"]
KINDS: tuple[RecipeKind, ...] = ("none", "tensor", "row", "delayed")
SIMPLICITY = {"none": 0, "tensor": 1, "delayed": 2, "row": 3, "block": 4}  # cheapest first


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: its kind, and for ``delayed`` the history length and reduction."""

    kind: RecipeKind
    history: int = 0
    reduce: Literal["max", "recent"] = "max"

    @property
    def name(self) -> str:
        if self.kind != "delayed":
            return self.kind
        return f"delayed:{self.history}" + (":recent" if self.reduce == "recent" else "")


def get_recipe(name: str) -> Recipe:
    """Parse ``none``, ``tensor``, ``row``, ``delayed:H``, ``delayed:H:max|recent``."""
    expected = (
        "expected one of ['delayed:H', 'delayed:H:max', 'delayed:H:recent', 'none', 'row', "
        "'tensor']"
    )
    parts = name.split(":")
    if parts[0] in ("none", "tensor", "row") and len(parts) == 1:
        return Recipe(parts[0])  # type: ignore[arg-type]
    if parts[0] == "delayed" and len(parts) in (2, 3):
        reduce = parts[2] if len(parts) == 3 else "max"
        if parts[1].isdigit() and int(parts[1]) >= 1 and reduce in ("max", "recent"):
            return Recipe("delayed", int(parts[1]), reduce)  # type: ignore[arg-type]
    raise StabilityError(f"unknown scaling recipe {name!r}; {expected} (H a whole number >= 1)")


@dataclass
class AmaxHistory:
    """The amax of the last ``length`` steps; the delayed recipe's state across steps."""

    length: int
    values: deque[float] = field(default_factory=deque)

    def push(self, amax: float) -> None:
        self.values.append(amax)
        while len(self.values) > self.length:
            self.values.popleft()


def history_for(
    histories: dict[Any, AmaxHistory], key: Hashable, recipe: Recipe
) -> AmaxHistory | None:
    """The amax history ``key`` (a module and tensor) carries across steps under ``recipe``,
    made on first use; None where the recipe keeps none (every recipe but delayed)."""
    if recipe.kind != "delayed":
        return None
    return histories.setdefault(key, AmaxHistory(recipe.history))


def scale_for(
    x: torch.Tensor, target_max: float, recipe: Recipe, history: AmaxHistory | None = None
) -> torch.Tensor:
    """The multiplier for ``x`` (a 0-d tensor, or per row shaped ``(..., 1)``).

    A zero or non-finite amax gives scale 1 (nothing to scale, or nothing a scale can save).
    ``delayed`` with an empty history uses the current amax (the first step), then records it.
    """
    if recipe.kind == "none":
        return torch.ones((), dtype=x.dtype, device=x.device)
    if recipe.kind == "row":
        amax = x.detach().abs().amax(dim=-1, keepdim=True)
    else:
        amax = x.detach().abs().amax()
    if recipe.kind == "delayed":
        if history is None:
            raise StabilityError("the delayed recipe needs an AmaxHistory to carry across steps")
        current = float(amax)
        if history.values:
            past = max(history.values) if recipe.reduce == "max" else history.values[-1]
            amax = torch.tensor(past, dtype=x.dtype, device=x.device)
        history.push(current)
    ok = torch.isfinite(amax) & (amax > 0)
    return torch.where(ok, target_max / torch.where(ok, amax, 1.0), 1.0).to(x.dtype)
