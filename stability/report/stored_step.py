"""One report step that is computed once per code version and stored as a run: reuse the
stored run this code made (its rows still in the store), else compute, store and record it.

The doctor's defaults, the spectrum tables and the notes' experiments are all such steps;
they differ only in what they compute and how they sum it up.
"""

import time
from collections.abc import Callable, Mapping
from typing import Any

from stability.report.cache import Cache, fingerprint
from stability.report.inputs import Step
from stability.report.progress import Display

# Computes and stores the step's rows: (run id, a summary for the step's line, or "").
Produce = Callable[[], tuple[int, str]]


def stored_step(
    cache: Cache,
    code: tuple[str, str],
    display: Display,
    name: str,
    kind: str,
    options: Mapping[str, Any],
    has_run: Callable[[int], bool],
    intro: str,
    produce: Produce,
) -> Step:
    """Reuse or run the step ``name`` (cache entries of ``kind``, keyed by code and options)."""
    code_hash, label = code
    fp = fingerprint(code_hash, kind, dict(options))
    cached = cache.stored_run(kind, fp, has_run)
    if cached is not None:
        detail = f"reused {kind} run {cached['run_id']} of {cached['finished']} ({label})"
        display.say(f"{name}: {detail}")
        return Step(name, "reused", detail)
    display.say(f"{name}: {intro}")
    start = time.perf_counter()
    run_id, summary = produce()
    seconds = time.perf_counter() - start
    cache.add_run(kind, fp, label, run_id, seconds)
    took = f": {summary}, {seconds:.0f} s" if summary else f" in {seconds:.0f} s"
    detail = f"{kind} run {run_id}{took} ({label})"
    display.say(f"{name}: {detail}")
    return Step(name, "ran", detail, seconds)
