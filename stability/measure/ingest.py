"""pytest-benchmark JSON into the results store: one row per benchmark, stats and extra_info.

``stability bench-ingest results/bench.json`` (or ``python -m stability.measure.ingest``)
stores a JSON written by ``pytest benchmarks --benchmark-json``.
"""

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stability.errors import StabilityError
from stability.results.store import Store

_STATS_KEYS = ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3", "rounds", "iterations")
DEFAULT_DB = "results/stability.db"


def bench_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten pytest-benchmark JSON: one dict per benchmark with its stats and extra_info."""
    rows = []
    for b in data.get("benchmarks", []):
        stats = b.get("stats", {})
        rows.append(
            {
                "name": b.get("name", ""),
                "fullname": b.get("fullname", ""),
                "group": b.get("group"),
                **{f"stats_{k}": stats.get(k) for k in _STATS_KEYS},
                **b.get("extra_info", {}),
            }
        )
    return rows


def ingest(json_path: Path | str, store: Store, command: Sequence[str] | None = None) -> int:
    """Read a pytest-benchmark JSON and write every benchmark under a new ``bench`` run."""
    path = Path(json_path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise StabilityError(f"cannot read benchmark JSON {str(path)!r}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise StabilityError(f"benchmark JSON {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise StabilityError(f"{str(path)!r} is not a pytest-benchmark JSON (no 'benchmarks')")
    rows = bench_rows(data)
    devices = {str(r.get("device", "cpu")) for r in rows} or {"cpu"}
    command = list(command or ["stability", "bench-ingest", str(path)])
    run_id = store.start_run("bench", command, ",".join(sorted(devices)))
    store.write_bench(run_id, rows)
    return run_id


def main(argv: Sequence[str], module: str = "stability.measure.ingest") -> int:
    """``JSON [DB]``: ingest and say which run it became; 2 with a usage line otherwise."""
    args = list(argv)
    if len(args) not in (1, 2):
        print(f"usage: python -m {module} JSON [DB]", file=sys.stderr)
        return 2
    try:
        with Store.open(args[1] if len(args) == 2 else DEFAULT_DB) as store:
            run_id = ingest(args[0], store, ["python", "-m", *module.split(), *args])
    except StabilityError as exc:
        print(f"{module}: error: {exc}", file=sys.stderr)
        return 2
    print(f"ingested {args[0]} as bench run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
