"""``stability bench-ingest``: store a pytest-benchmark JSON in the results store."""

import argparse
import sys
from pathlib import Path

from stability.cli.args import SubParsers, add_db_argument
from stability.results.files import check_store
from stability.results.store import Store


def add_bench_ingest(sub: SubParsers) -> None:
    p = sub.add_parser(
        "bench-ingest",
        help="store a pytest-benchmark JSON (stats + extra_info) in the results store",
        description="Write every benchmark of a pytest-benchmark JSON under a new bench run.",
    )
    p.add_argument("json", type=Path, help="pytest-benchmark JSON (--benchmark-json output)")
    add_db_argument(p)
    p.set_defaults(handler=_cmd_bench_ingest)


def _cmd_bench_ingest(args: argparse.Namespace) -> int:
    from stability.measure.ingest import ingest, load_rows

    check_store(args.db, [args.json])  # before the store is opened (or created)
    rows = load_rows(args.json)  # read and validated first: a bad file creates no store
    with Store.open(args.db) as store:
        run_id = ingest(args.json, store, ["stability", *sys.argv[1:]], rows)
        count = int((store.bench_results()["run_id"] == run_id).sum())
    print(f"bench run {run_id}: {count} results from {args.json} (store: {args.db})")
    return 0
