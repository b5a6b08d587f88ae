"""What a benchmark JSON must hold before one row of it is stored: all of it valid, or nothing.

The shape is pytest-benchmark's ``--benchmark-json`` output as this project's benchmarks
write it: ``{"benchmarks": [entry, ...]}``, each entry with a ``name``, a ``stats`` dict of
finite numbers (per timed block) and an ``extra_info`` dict carrying what the report and the
gate read: ``batch_size``, ``samples_per_s``, ``device`` and ``dtype`` (``benchmarks/``
attach them through ``stability.measure.bench.Throughput.as_dict`` or by hand). A file
that passes here cannot break the report later (``KeyError: 'batch_size'``, NaN medians).
"""

import math
from collections.abc import Mapping
from typing import Any

from stability.errors import StabilityError

STATS_KEYS = ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3", "rounds", "iterations")
COUNT_STATS = ("rounds", "iterations")  # whole numbers >= 1
REQUIRED_EXTRA = ("batch_size", "samples_per_s", "device", "dtype")
FINITE_EXTRA = ("median_s", "iqr_s", "efficiency")  # read as numbers when present
_SHOWN = 3  # problems named in the one line; the rest are counted


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _number(value) and math.isfinite(value)


def _stats_problems(stats: Any) -> list[str]:
    if not isinstance(stats, Mapping):
        return [f"'stats' must be an object of numbers, got {type(stats).__name__}"]
    missing = [k for k in STATS_KEYS if k not in stats]
    problems = [f"'stats' lacks {', '.join(map(repr, missing))}"] if missing else []
    for key, value in stats.items():
        if _number(value) and not math.isfinite(value):
            problems.append(f"stats {key!r} is {value} (not finite)")
        elif key in STATS_KEYS and not _number(value):
            problems.append(f"stats {key!r} must be a number, got {value!r:.40}")
        elif key in COUNT_STATS and (value != int(value) or value < 1):
            problems.append(f"stats {key!r} must be a whole number >= 1, got {value!r}")
    return problems


def extra_info_problems(extra: Any) -> list[str]:
    """What a benchmark must attach before it can be stored (checked after each benchmark too)."""
    if not isinstance(extra, Mapping):
        return [f"'extra_info' must be an object, got {type(extra).__name__}"]
    missing = [k for k in REQUIRED_EXTRA if k not in extra]
    problems = [f"'extra_info' lacks {', '.join(map(repr, missing))}"] if missing else []
    batch = extra.get("batch_size", 1)
    if not (_number(batch) and float(batch).is_integer() and batch >= 1):
        problems.append(f"extra_info 'batch_size' must be a whole number >= 1, got {batch!r:.40}")
    speed = extra.get("samples_per_s", 1.0)
    if not (_finite(speed) and speed > 0):
        problems.append(f"extra_info 'samples_per_s' must be finite and > 0, got {speed!r:.40}")
    for key in ("device", "dtype"):
        value = extra.get(key, "cpu")
        if not (isinstance(value, str) and value):
            problems.append(f"extra_info {key!r} must be a non-empty string, got {value!r:.40}")
    for key in FINITE_EXTRA:
        if key in extra and not _finite(extra[key]):
            problems.append(f"extra_info {key!r} must be a finite number, got {extra[key]!r:.40}")
    return problems


def entry_problems(entry: Any) -> list[str]:
    """Everything wrong with one entry of ``benchmarks``; [] when it can be stored."""
    if not isinstance(entry, Mapping):
        return [f"must be an object, got {type(entry).__name__} {entry!r:.40}"]
    problems = []
    name = entry.get("name")
    if not (isinstance(name, str) and name):
        problems.append(f"'name' must be a non-empty string, got {name!r:.40}")
    for key in ("fullname", "group"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            problems.append(f"{key!r} must be a string, got {entry[key]!r:.40}")
    problems += _stats_problems(entry.get("stats"))
    problems += extra_info_problems(entry.get("extra_info"))
    return problems


def validate(doc: Any, source: str) -> list[Mapping[str, Any]]:
    """The entries of a benchmark JSON, every one valid; else one line naming the problems."""
    where = f"benchmark JSON {source}"
    if not isinstance(doc, Mapping) or "benchmarks" not in doc:
        raise StabilityError(f"{source} is not a pytest-benchmark JSON (no 'benchmarks')")
    entries = doc["benchmarks"]
    if not isinstance(entries, list):
        raise StabilityError(
            f"{where}: 'benchmarks' must be a list of entries, got {type(entries).__name__}"
        )
    if not entries:
        raise StabilityError(f"{where} holds no benchmarks; nothing to store")
    found = []
    for i, entry in enumerate(entries):
        label = f"entry {i}"
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
            label += f" ({entry['name']!r:.60})"
        found += [f"{label}: {p}" for p in entry_problems(entry)]
    if found:
        more = f" (and {len(found) - _SHOWN} more)" if len(found) > _SHOWN else ""
        raise StabilityError(
            f"{where} is invalid, nothing was stored: {'; '.join(found[:_SHOWN])}{more}"
        )
    return list(entries)
