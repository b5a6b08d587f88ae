"""The report's step for the notes' experiments: ``stability experiments --quick``, stored
under a run marked as the report's, once per code version (the runner's cache)."""

import time

from stability.experiments.registry import select
from stability.experiments.runner import run_experiments, store_results
from stability.report.cache import Cache, fingerprint
from stability.report.inputs import Step
from stability.report.progress import Display
from stability.results.store import Store

NAME = "notes' experiments"
MARKER = "(notes' experiments)"
VERSION = 1  # bump when the experiments change in a way the code hash cannot see
KIND = "experiments"


def experiments_step(store: Store, cache: Cache, code: tuple[str, str], display: Display) -> Step:
    """Reuse the stored quick run made by this code; else run all five quickly and store."""
    code_hash, label = code
    fp = fingerprint(code_hash, KIND, {"version": VERSION, "quick": True})
    cached = cache.stored_run(KIND, fp, store.has_run)
    if cached is not None:
        detail = f"reused experiments run {cached['run_id']} of {cached['finished']} ({label})"
        display.say(f"{NAME}: {detail}")
        return Step(NAME, "reused", detail)
    display.say(f"{NAME}: running the five experiments (quick sizes)")
    start = time.perf_counter()
    results = run_experiments(select(None), quick=True, say=display.say)
    run_id = store_results(store, results, ["stability", "report", MARKER])
    seconds = time.perf_counter() - start
    cache.add_run(KIND, fp, label, run_id, seconds)
    held = sum(c.ok for r in results for c in r.claims)
    total = sum(len(r.claims) for r in results)
    detail = f"experiments run {run_id}: {held} of {total} claims hold, {seconds:.0f} s ({label})"
    display.say(f"{NAME}: {detail}")
    return Step(NAME, "ran", detail, seconds)
