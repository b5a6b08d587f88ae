"""What a baseline must look like before the gate trusts it: the schema ``stability baseline``
writes, checked field by field, so a hand-edited or truncated file exits 2 instead of passing.

The gate fails closed: an empty or partial grid, a figure that is not a finite non-negative
number, a list of the wrong length, or too few efficiency samples to ever reach significance
are all reasons to refuse to judge. Each message names the field (a JSON path such as
``stability['relu/kaiming_normal/float32/d10w64/b64/s0'].act_var[3]``) and what was expected.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stability.core.dtypes import DTYPES
from stability.errors import StabilityError

FIGURES = ("preact_var", "act_var", "grad_var")
FINGERPRINT_KEYS = ("python", "torch", "system", "machine", "cpu_model", "cpu_count", "threads")
MAX_EFFICIENCY = 100.0  # a step 100x faster than its own GEMM is not a measurement


class SchemaError(StabilityError):
    """The document is not what ``stability baseline`` writes."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _need(cond: bool, where: str, expected: str, got: object) -> None:
    if not cond:
        shown = repr(got)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise SchemaError(f"{where}: expected {expected}, got {shown}")


def _mapping(doc: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = doc.get(key)
    _need(isinstance(value, dict), f"{where}{key}", "an object", value)
    assert isinstance(value, dict)
    return value


def _numbers(
    value: object, where: str, valid: Callable[[float], bool], what: str
) -> Sequence[float]:
    _need(isinstance(value, list) and len(value) > 0, where, "a non-empty list", value)
    assert isinstance(value, list)
    for i, v in enumerate(value):
        _need(_is_number(v) and valid(float(v)), f"{where}[{i}]", what, v)
    return value


def check_figures(name: str, cell: Mapping[str, Any]) -> None:
    """One stability cell: its dtype, config and three per-layer lists of variances."""
    where = f"stability[{name!r}]"
    dtype = cell.get("dtype")
    _need(
        isinstance(dtype, str) and dtype in DTYPES,
        f"{where}.dtype",
        f"one of {sorted(DTYPES)}",
        dtype,
    )
    config = _mapping(cell, "config", f"{where}.")
    depth = config.get("depth")
    _need(
        isinstance(depth, int) and not isinstance(depth, bool) and 1 <= depth <= 10_000,
        f"{where}.config.depth",
        "an integer in [1, 10000]",
        depth,
    )
    assert isinstance(depth, int) and isinstance(dtype, str)
    biggest = DTYPES[dtype].max
    for fig in FIGURES:
        values = _numbers(
            cell.get(fig),
            f"{where}.{fig}",
            lambda v: math.isfinite(v) and 0.0 <= v <= biggest,
            f"a finite variance in [0, {biggest:.3g}]",
        )
        _need(len(values) == depth, f"{where}.{fig}", f"{depth} layers (config.depth)", values)


def validate(
    doc: object, expected_cells: Callable[[Mapping[str, Any]], list[str]], min_efficiency: int
) -> None:
    """Raise ``SchemaError`` unless ``doc`` is a complete baseline.

    ``expected_cells(defaults)`` names the grid this code measures for the baseline's recorded
    defaults: the stored cells must be exactly those (no empty, partial or foreign grid).
    """
    _need(isinstance(doc, dict), "the document", "a JSON object", type(doc).__name__)
    assert isinstance(doc, dict)
    created = _mapping(doc, "created", "")
    for key in ("by", "at", "why"):
        _need(isinstance(created.get(key), str), f"created.{key}", "a string", created.get(key))
    env = _mapping(doc, "environment", "")
    for key in FINGERPRINT_KEYS:
        value = env.get(key)
        _need(
            isinstance(value, str | int) and not isinstance(value, bool),
            f"environment.{key}",
            "a string or integer",
            value,
        )
    defaults = _mapping(doc, "defaults", "")
    for key in ("activation", "init"):
        _need(isinstance(defaults.get(key), str), f"defaults.{key}", "a name", defaults.get(key))
    cells = _mapping(doc, "stability", "")
    want = expected_cells(defaults)
    missing = [n for n in want if n not in cells]
    extra = [n for n in cells if n not in want]
    if missing or extra:
        raise SchemaError(
            f"stability: the baseline's grid is not this code's grid ({len(cells)} cells stored, "
            f"{len(want)} expected; missing {missing[:2]}{'...' if len(missing) > 2 else ''}, "
            f"unexpected {extra[:2]}{'...' if len(extra) > 2 else ''})"
        )
    for name in want:
        cell = cells[name]
        _need(isinstance(cell, dict), f"stability[{name!r}]", "an object", cell)
        check_figures(name, cell)
    throughput = _mapping(doc, "throughput", "")
    eff = _numbers(
        throughput.get("efficiency"),
        "throughput.efficiency",
        lambda v: math.isfinite(v) and 0.0 < v <= MAX_EFFICIENCY,
        f"an efficiency in (0, {MAX_EFFICIENCY:g}]",
    )
    _need(
        len(eff) >= min_efficiency,
        "throughput.efficiency",
        f"at least {min_efficiency} samples (fewer can never reach significance)",
        f"{len(eff)} samples",
    )
