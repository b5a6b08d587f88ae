"""Hypothesis strategies for ``stability.testing``: the project's names and configs.

Imported by ``stability.testing`` (the public path); hypothesis itself is imported on first
use, so the assertions work without it (``pip install 'stability[test]'``).
"""

from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING

from stability.core.activations import ACTIVATIONS
from stability.core.config import MLPConfig
from stability.core.dtypes import DTYPES
from stability.core.inits import INITS
from stability.errors import StabilityError

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

MAX_SEED = 2**32 - 1


def _strategies() -> ModuleType:
    """hypothesis.strategies, imported on first use so the assertions work without it."""
    try:
        from hypothesis import strategies
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "stability.testing strategies need hypothesis: pip install 'stability[test]'"
        ) from exc
    return strategies


def _names_from(kind: str, table: Iterable[str], chosen: Iterable[str] | None) -> list[str]:
    valid = sorted(table)
    names = valid if chosen is None else list(chosen)
    for name in names:
        if name not in valid:
            raise StabilityError(f"unknown {kind} {name!r}; expected one of {valid}")
    if not names:
        raise StabilityError(f"no {kind} to draw from; expected one or more of {valid}")
    return names


def activations(names: Iterable[str] | None = None) -> "SearchStrategy[str]":
    """An activation name from the registry (all of them, or the ``names`` given)."""
    st = _strategies()
    strategy: SearchStrategy[str] = st.sampled_from(_names_from("activation", ACTIVATIONS, names))
    return strategy


def inits(names: Iterable[str] | None = None, data_driven: bool = True) -> "SearchStrategy[str]":
    """An init name from the registry; ``data_driven=False`` leaves out LSUV (it runs a batch)."""
    chosen = _names_from("init", INITS, names)
    if not data_driven:
        chosen = [n for n in chosen if not INITS[n].data_driven]
    st = _strategies()
    strategy: SearchStrategy[str] = st.sampled_from(_names_from("init", INITS, chosen))
    return strategy


def dtypes(
    names: Iterable[str] | None = None, reduced: bool | None = None
) -> "SearchStrategy[str]":
    """A dtype name; ``reduced=True`` for float16/bfloat16 only, ``False`` for the others."""
    chosen = _names_from("dtype", DTYPES, names)
    if reduced is not None:
        chosen = [n for n in chosen if DTYPES[n].reduced == reduced]
    st = _strategies()
    strategy: SearchStrategy[str] = st.sampled_from(_names_from("dtype", DTYPES, chosen))
    return strategy


def _check_range(name: str, low: int, high: int) -> None:
    if isinstance(low, bool) or isinstance(high, bool) or low < 1 or high < low:
        raise StabilityError(f"{name} range must satisfy 1 <= min <= max, got {low}..{high}")


def mlp_configs(
    max_depth: int = 8,
    max_width: int = 64,
    *,
    min_depth: int = 1,
    min_width: int = 1,
    activation: "SearchStrategy[str] | None" = None,
    init: "SearchStrategy[str] | None" = None,
    dtype: "SearchStrategy[str] | None" = None,
    device: str = "cpu",
) -> "SearchStrategy[MLPConfig]":
    """An ``MLPConfig`` with depth and width in range, drawn from the piece strategies.

    ``activation``, ``init`` and ``dtype`` default to ``activations()``, ``inits()`` and
    ``dtypes()``; pass narrower ones (``st.just("relu")``) to pin a piece. Bias and seed are
    drawn too; shrinking goes towards shallow, narrow, seed-0 configs.
    """
    _check_range("depth", min_depth, max_depth)
    _check_range("width", min_width, max_width)
    st = _strategies()
    pieces = (
        activation if activation is not None else activations(),
        init if init is not None else inits(),
        dtype if dtype is not None else dtypes(),
    )

    strategy: SearchStrategy[MLPConfig] = st.builds(
        MLPConfig,
        depth=st.integers(min_value=min_depth, max_value=max_depth),
        width=st.integers(min_value=min_width, max_value=max_width),
        activation=pieces[0],
        init=pieces[1],
        dtype=pieces[2],
        bias=st.booleans(),
        seed=st.integers(min_value=0, max_value=MAX_SEED),
        device=st.just(device),
    )
    return strategy
