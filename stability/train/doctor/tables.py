"""A doctor run as tables, and where they go: CSV files side by side, and the store.

``stability doctor`` and the report's default cases write the same tables (``diagnosis``,
``layers``, then any of ``cost``, ``lr_search``, ``lr_map``, ``loss_scaling``); one writer
keeps their shape the same wherever they are read back.
"""

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from stability.errors import StabilityError
from stability.results.files import write_csv
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
    """Where a table goes: the diagnosis at ``out``, every other one beside it as
    ``<stem>-<kind>.csv`` (output files are lowercase words joined by hyphens, as the
    report's CSVs are: ``doctor-layers.csv``, ``doctor-lr-map.csv``)."""
    if kind == "diagnosis":
        return out
    return out.with_name(f"{out.stem}-{kind.replace('_', '-')}.csv")


OPTIONAL_TABLES = ("cost", "lr_search", "lr_map", "loss_scaling")  # the studies' tables


def doctor_outputs(out: Path, figure: Path | None, studies: Iterable[str]) -> dict[str, Path]:
    """Every file a doctor run writes, named as the user gave it: for the output-path rule
    (``check_outputs``) to check all of them before any training."""
    outputs = {"--out": out, "--out (layers table)": doctor_csv_path(out, "layers")}
    for kind in studies:
        outputs[f"--out ({kind} table)"] = doctor_csv_path(out, kind)
    if figure is not None:
        outputs["--figure"] = figure
    return outputs


def write_doctor_csvs(out: Path, tables: Mapping[str, pd.DataFrame]) -> list[Path]:
    """Write every table as CSV (the diagnosis first); the paths written, in that order."""
    if "diagnosis" not in tables:
        raise StabilityError(f"doctor tables need a 'diagnosis' table; got {sorted(tables)}")
    kinds = ["diagnosis", *(k for k in tables if k != "diagnosis")]
    written = []
    for kind in kinds:
        path = doctor_csv_path(out, kind)
        write_csv(tables[kind], path)  # atomic: a full disk leaves the old file whole
        written.append(path)
    return written


def write_doctor_run(
    store: Store, tables: Mapping[str, pd.DataFrame], command: Sequence[str], device: str
) -> int:
    """Store every table's rows under a new doctor run; its run id."""
    records = {
        kind: [{str(k): v for k, v in r.items()} for r in table.to_dict("records")]
        for kind, table in tables.items()
    }
    return store.write_doctor_run(list(command), device, records)  # one transaction
