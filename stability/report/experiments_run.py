"""The report's step for the notes' experiments: ``stability experiments --quick``, stored
under a run marked as the report's, once per code version (the runner's cache)."""

from stability.experiments.registry import select
from stability.experiments.runner import run_experiments, store_results
from stability.report.cache import Cache
from stability.report.inputs import Step
from stability.report.progress import Display
from stability.report.stored_step import stored_step
from stability.results.store import Store

NAME = "notes' experiments"
MARKER = "(notes' experiments)"
VERSION = 1  # bump when the experiments change in a way the code hash cannot see
KIND = "experiments"


def experiments_step(store: Store, cache: Cache, code: tuple[str, str], display: Display) -> Step:
    """Reuse the stored quick run made by this code; else run all five quickly and store."""

    def produce() -> tuple[int, str]:
        results = run_experiments(select(None), quick=True, say=display.say)
        run_id = store_results(store, results, ["stability", "report", MARKER])
        held = sum(c.ok for r in results for c in r.claims)
        return run_id, f"{held} of {sum(len(r.claims) for r in results)} claims hold"

    return stored_step(
        cache, code, display, NAME, KIND, {"version": VERSION, "quick": True}, store.has_run,
        "running the five experiments (quick sizes)", produce,
    )  # fmt: skip
