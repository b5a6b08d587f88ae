"""One lookup for every name -> thing table, so every unknown name fails the same way."""

from collections.abc import Mapping
from typing import TypeVar

from stability.errors import StabilityError

T = TypeVar("T")


def lookup(kind: str, name: str, table: Mapping[str, T]) -> T:
    """Return ``table[name]`` or raise an error naming the kind, the bad value and the choices."""
    try:
        return table[name]
    except (KeyError, TypeError):
        message = f"unknown {kind} {name!r}; expected one of {sorted(table)}"
        raise StabilityError(message) from None
