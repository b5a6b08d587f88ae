"""A doctor run as tables, and where they go: CSV files side by side, and the store.

``stability doctor`` and the report's default cases write the same tables (``diagnosis``,
``layers``, then any of ``cost``, ``lr_search``, ``lr_map``, ``loss_scaling``); one writer
keeps their shape the same wherever they are read back.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from stability.errors import StabilityError
from stability.results.store import Store
from stability.train.doctor.diagnosis import Diagnosis


def diagnosis_tables(diag: Diagnosis) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one-row verdict, per-layer last finite statistics with the config's fields)."""
    verdict = pd.DataFrame([diag.as_row()])
    layers = diag.last_finite.copy()
    for key, value in diag.config.as_dict().items():
        layers[key] = value
    return verdict, layers


def doctor_csv_path(out: Path, kind: str) -> Path:
    """Where a table goes: the diagnosis at ``out``, every other one beside it."""
    return out if kind == "diagnosis" else out.with_name(f"{out.stem}_{kind}.csv")


def write_doctor_csvs(out: Path, tables: Mapping[str, pd.DataFrame]) -> list[Path]:
    """Write every table as CSV (the diagnosis first); the paths written, in that order."""
    if "diagnosis" not in tables:
        raise StabilityError(f"doctor tables need a 'diagnosis' table; got {sorted(tables)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    kinds = ["diagnosis", *(k for k in tables if k != "diagnosis")]
    written = []
    for kind in kinds:
        path = doctor_csv_path(out, kind)
        tables[kind].to_csv(path, index=False)
        written.append(path)
    return written


def write_doctor_run(
    store: Store, tables: Mapping[str, pd.DataFrame], command: Sequence[str], device: str
) -> int:
    """Store every table's rows under a new doctor run; its run id."""
    run_id = store.start_run("doctor", list(command), device)
    for kind, table in tables.items():
        records = [{str(k): v for k, v in r.items()} for r in table.to_dict("records")]
        store.write_doctor(run_id, kind, records)
    return run_id
