"""Run a selection of experiments, then write a CSV and a figure each and store the rows.

Everything runs on one torch thread: the networks are small, so a second thread only adds
synchronisation (on 2 busy cores it made the polynomial fit several times slower), and one
thread gives the same numbers on any machine. Progress goes to ``say`` (stderr in the CLI).
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from stability.experiments.common import Claim, Experiment, seed_list
from stability.measure.threads import threads
from stability.results.files import save_figure, write_csv
from stability.results.store import Store

RECORD_PREFIX = "exp_"  # store name of an experiment's rows: exp_<name>


@dataclass
class Result:
    """One experiment's run: its rows, its claims judged on them, and its wall time."""

    experiment: Experiment
    rows: pd.DataFrame
    claims: list[Claim]
    seeds: int
    seconds: float

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.claims)

    def summary(self) -> dict[str, object]:
        """What ``--json`` prints for this experiment."""
        return {"name": self.experiment.name, "title": self.experiment.title,
                "seeds": self.seeds, "seconds": round(self.seconds, 2), "ok": self.ok,
                "claims": [c.as_dict() for c in self.claims], "rows": len(self.rows)}  # fmt: skip


def record_name(name: str) -> str:
    """The store name of an experiment's rows."""
    return f"{RECORD_PREFIX}{name}"


def run_experiments(
    experiments: Sequence[Experiment],
    quick: bool,
    seeds: int | None = None,
    device: str = "cpu",
    say: Callable[[str], None] = lambda line: None,
) -> list[Result]:
    """Run each experiment (``seeds`` seeds, or its own default for the mode)."""
    results = []
    with threads(1):
        for k, exp in enumerate(experiments, start=1):
            count = seeds if seeds is not None else (exp.quick_seeds if quick else exp.full_seeds)
            say(f"experiments: [{k}/{len(experiments)}] {exp.name}, {count} seeds ...")
            start = time.perf_counter()
            rows = exp.run(seed_list(count), quick, device)
            seconds = time.perf_counter() - start
            claims = exp.claims(rows)
            held = sum(c.ok for c in claims)
            say(f"experiments: [{k}/{len(experiments)}] {exp.name} done in {seconds:.1f} s, "
                f"{held} of {len(claims)} claims hold")  # fmt: skip
            results.append(Result(exp, rows, claims, count, seconds))
    return results


def output_paths(names: Sequence[str], out: Path, fmt: str) -> dict[str, Path]:
    """``<out>/<name>.csv`` and ``<out>/<name>.<fmt>`` per experiment, labelled for errors."""
    paths = {}
    for name in names:
        paths[f"{name} CSV"] = out / f"{name}.csv"
        paths[f"{name} figure"] = out / f"{name}.{fmt}"
    return paths


def write_outputs(results: Sequence[Result], out: Path, fmt: str) -> list[Path]:
    """The CSV and the figure of each result; the paths written."""
    written = []
    for r in results:
        csv = out / f"{r.experiment.name}.csv"
        fig = out / f"{r.experiment.name}.{fmt}"
        write_csv(r.rows, csv, f"{r.experiment.name} CSV")
        save_figure(r.experiment.draw(r.rows), fig, dpi=110, what=f"{r.experiment.name} figure")
        written += [csv, fig]
    return written


def store_results(
    store: Store, results: Sequence[Result], command: Sequence[str], device: str = "cpu"
) -> int:
    """One ``experiments`` run holding every result's rows under ``exp_<name>``."""
    tables = {
        record_name(r.experiment.name): [{str(k): v for k, v in row.items()}
                                         for row in r.rows.to_dict("records")]
        for r in results
    }  # fmt: skip
    return store.write_records_run("experiments", command, device, tables)
