"""The CSV of plain records is pandas' CSV of their frame, byte for byte.

``stability sweep --quiet`` writes its CSV with ``results/csv_records.py`` and never loads
pandas (issue 27). pandas is the reference here: on a real sweep's rows (a quiet one and
one with biases, whose rows carry a caveat string and an empty band), and on generated
records of every kind the writer claims (ints, floats with NaN, inf and -0.0, bools,
strings with commas, quotes and newlines, nulls and missing keys). What it does not claim
(a list, an int past int64, strings mixed with numbers) falls back to pandas itself.
"""

import io
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stability.cli import main
from stability.results import csv_records
from stability.results.csv_records import records_csv_text, write_records_csv
from stability.results.store import Store

GRID = ["--activation", "tanh,relu", "--init", "xavier_normal,kaiming_normal", "--depth", "3",
        "--width", "8", "--dtype", "float32,float16", "--seeds", "0,1", "--batch", "4"]  # fmt: skip


def pandas_text(records: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    pd.DataFrame.from_records(records).to_csv(out, index=False)
    return out.getvalue()


def swept(tmp_path: Path, *extra: str) -> tuple[Path, list[dict[str, Any]]]:
    db, out = tmp_path / "s.db", tmp_path / "s.csv"
    assert main(["sweep", *GRID, *extra, "--db", str(db), "--out", str(out), "--quiet"]) == 0
    with Store.open(db) as store:
        return out, store.sweep_records()


@pytest.mark.parametrize("extra", [[], ["--bias-var", "0.05"]], ids=["plain", "biases"])
def test_a_sweeps_csv_is_pandas_csv(tmp_path: Path, extra: list[str]) -> None:
    out, records = swept(tmp_path, *extra)
    text = records_csv_text(records)
    assert text is not None  # the sweep's rows take the fast path, not the fallback
    assert out.read_text(encoding="utf-8") == text == pandas_text(records)
    assert len(pd.read_csv(out)) == 2 * 2 * 2 * 2 * 3


def test_a_quiet_sweep_never_loads_pandas(tmp_path: Path) -> None:
    """The point of the module: the whole command, in a fresh interpreter."""
    code = (
        "import sys; from stability.cli import main; "
        f"rc = main(['sweep', *{GRID!r}, '--db', {str(tmp_path / 's.db')!r}, "
        f"'--out', {str(tmp_path / 's.csv')!r}, '--quiet']); "
        "print(rc, 'pandas' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split()[-2:] == ["0", "False"]
    assert (tmp_path / "s.csv").stat().st_size > 0


def test_the_witness_a_rounded_float_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that rounds floats (``%g``) is not pandas' CSV, and the comparison sees it."""
    _, records = swept(tmp_path)
    monkeypatch.setattr(csv_records, "_float", lambda v: "" if v is None else f"{v:g}")
    assert records_csv_text(records) != pandas_text(records)


FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 1e16, 1e-4, 5e-324, 2.0, 0.1, math.nan, -math.inf]
)
TEXT = st.text(alphabet=st.sampled_from(list("ab ,\"\n\r;é'x0")), max_size=6)
KINDS = {
    "int": st.integers(-(2**63), 2**63 - 1),
    "float": FLOATS,
    "number": st.integers(-1000, 1000) | FLOATS,
    "bool": st.booleans(),
    "str": TEXT,
}
NULL = st.sampled_from([None, math.nan, "missing"])


@st.composite
def records(draw: st.DrawFn) -> list[dict[str, Any]]:
    kinds = draw(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=5))
    gappy = draw(st.lists(st.booleans(), min_size=len(kinds), max_size=len(kinds)))
    out = []
    for _ in range(draw(st.integers(1, 6))):
        row: dict[str, Any] = {}
        for i, (kind, gaps) in enumerate(zip(kinds, gappy, strict=True)):
            value = draw(NULL | KINDS[kind]) if gaps else draw(KINDS[kind])
            if value != "missing" or kind == "str":
                row[f"c{i}_{kind}"] = value
        out.append(row)
    return out


@settings(derandomize=True, max_examples=300, deadline=None)
@given(records())
def test_generated_records_are_pandas_csv(recs: list[dict[str, Any]]) -> None:
    text = records_csv_text(recs)
    if not any(recs):  # no column at all: pandas' own case, left to pandas
        assert text is None
        return
    assert text is not None  # every kind drawn here is one the writer claims
    assert text == pandas_text(recs)


@pytest.mark.parametrize(
    "column",
    [[[1, 2], None], [2**63, 1], ["a", 1.5], [True, 1]],
    ids=["list", "past-int64", "str-and-number", "bool-and-int"],
)
def test_what_it_does_not_claim_falls_back_to_pandas(tmp_path: Path, column: list[Any]) -> None:
    recs = [{"x": v, "y": i} for i, v in enumerate(column)]
    assert records_csv_text(recs) is None
    write_records_csv(recs, tmp_path / "f.csv")
    assert (tmp_path / "f.csv").read_text(encoding="utf-8") == pandas_text(recs)
