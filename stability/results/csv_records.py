"""A CSV of plain records, written as pandas would write their frame, without pandas.

``stability sweep --quiet`` needs nothing from pandas but the CSV of its rows, and
importing pandas is 0.3 s of a 4 s command (issue 27). The rows are the store's JSON
records: ints, floats, strings, bools and nulls. For those, ``records_csv_text`` gives
the text of ``pd.DataFrame.from_records(records).to_csv(index=False)`` byte for byte
(``tests/test_csv_records.py`` holds it to pandas on sweep rows and on generated records):
columns in the order they first appear; a column of ints stays ints unless it has a gap,
when it is a float column as in pandas; floats in their shortest round-trip form; gaps
and NaN empty. Anything else (a list, an int beyond int64, a column mixing strings and
numbers) returns None, and the caller lets pandas write it.
"""

import csv
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stability.results.files import atomic_path, write_csv

if TYPE_CHECKING:
    import pandas as pd

INT64 = 2**63

Cell = Callable[[Any], str]


def records_csv_text(records: Sequence[Mapping[str, Any]]) -> str | None:
    """The CSV text pandas writes for these records, or None where its rules are not these."""
    columns = list(dict.fromkeys(name for r in records for name in r))
    if not columns:
        return None  # pandas' CSV of no columns is a bare line per frame, not per record
    formats = []
    for name in columns:
        cell = _column_format([r.get(name) for r in records])
        if cell is None:
            return None
        formats.append(cell)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=os.linesep)
    writer.writerow(columns)
    for r in records:
        writer.writerow([f(r.get(n)) for n, f in zip(columns, formats, strict=True)])
    return out.getvalue()


def records_frame(records: Sequence[Mapping[str, Any]]) -> "pd.DataFrame":
    """The records' frame, for the code that judges or prints them: pandas loads here."""
    import pandas as pd

    return pd.DataFrame.from_records(records)


def write_records_csv(
    records: Sequence[Mapping[str, Any]], path: Path, what: str = "output file"
) -> None:
    """``write_csv`` of the records' frame, atomically; pandas is imported only for records
    outside ``records_csv_text``'s rules."""
    text = records_csv_text(records)
    if text is None:
        write_csv(records_frame(records), path, what)
        return
    with atomic_path(path, what) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _column_format(values: list[Any]) -> Cell | None:
    """How pandas writes one column's cells, from the types it infers for the column."""
    present = [v for v in values if not _missing(v)]
    gaps = len(present) < len(values)
    kinds = {type(v) for v in present}
    if not kinds:
        return _blank
    if kinds == {bool}:
        return _text if not gaps else _text_or_blank  # a gap makes it an object column
    if kinds <= {int, float}:
        if any(isinstance(v, int) and not -INT64 <= v < INT64 for v in present):
            return None  # pandas keeps such ints as objects
        return _text if kinds == {int} and not gaps else _float
    if kinds == {str}:
        return _text_or_blank
    return None


def _blank(value: Any) -> str:
    return ""


def _text(value: Any) -> str:
    return str(value)


def _text_or_blank(value: Any) -> str:
    return "" if _missing(value) else str(value)


def _float(value: Any) -> str:
    return "" if _missing(value) else repr(float(value))
