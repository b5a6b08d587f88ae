"""pytest-benchmark JSON into the results store: one row per benchmark, stats and extra_info.

``stability bench-ingest results/bench.json`` (or ``python -m stability.measure.ingest``)
stores a JSON written by ``pytest benchmarks --benchmark-json``.
"""

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stability.errors import StabilityError
from stability.measure.bench_schema import STATS_KEYS, validate
from stability.results.files import check_store, read_input
from stability.results.store import Store

DEFAULT_DB = "results/stability.db"


def bench_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Flatten pytest-benchmark JSON: one dict per benchmark with its stats and extra_info."""
    rows = []
    for b in data.get("benchmarks", []):
        stats = b.get("stats", {})
        rows.append(
            {
                "name": b.get("name", ""),
                "fullname": b.get("fullname", ""),
                "group": b.get("group"),
                **{f"stats_{k}": stats.get(k) for k in STATS_KEYS},
                **b.get("extra_info", {}),
            }
        )
    return rows


def read_json(path: Path) -> Any:
    """The parsed file, or one line saying why it cannot be (missing, not a regular file,
    over ``MAX_INPUT_BYTES``, binary, not JSON)."""
    data = read_input(path, "benchmark JSON")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StabilityError(
            f"benchmark JSON {str(path)!r} is not UTF-8 text (a binary file?); pass the file "
            "pytest --benchmark-json wrote"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StabilityError(f"benchmark JSON {str(path)!r} is not valid JSON: {exc}") from None
    except RecursionError:
        raise StabilityError(f"benchmark JSON {str(path)!r} is nested too deeply") from None


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The file's benchmarks as rows, the whole file validated (``bench_schema``)."""
    return bench_rows({"benchmarks": validate(read_json(path), repr(str(path)))})


def ingest(
    json_path: Path | str,
    store: Store,
    command: Sequence[str] | None = None,
    rows: list[dict[str, Any]] | None = None,
) -> int:
    """Read a pytest-benchmark JSON and write every benchmark under a new ``bench`` run.

    The whole file is validated first (``bench_schema``): all of it is stored, or nothing.
    ``rows``: the file's ``load_rows``, read before the store was opened.
    """
    path = Path(json_path)
    check_store(store.path, [path])
    if rows is None:
        rows = load_rows(path)
    devices = {str(r.get("device", "cpu")) for r in rows} or {"cpu"}
    command = list(command or ["stability", "bench-ingest", str(path)])
    return store.write_bench_run(command, ",".join(sorted(devices)), rows)


def main(argv: Sequence[str], module: str = "stability.measure.ingest") -> int:
    """``JSON [DB]``: ingest and say which run it became; 2 with a usage line otherwise."""
    args = list(argv)
    if len(args) not in (1, 2):
        print(f"usage: python -m {module} JSON [DB]", file=sys.stderr)
        return 2
    try:
        db = Path(args[1] if len(args) == 2 else DEFAULT_DB)
        check_store(db, [Path(args[0])])
        rows = load_rows(Path(args[0]))  # a bad file creates no store
        with Store.open(db) as store:
            run_id = ingest(args[0], store, ["python", "-m", *module.split(), *args], rows)
    except StabilityError as exc:
        print(f"{module}: error: {exc}", file=sys.stderr)
        return 2
    print(f"ingested {args[0]} as bench run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
