"""The page model: a section holds notes, figures and tables; the template lays them out.

Tables are pandas DataFrames; ``Table.html`` renders them with
``DataFrame.to_html(escape=True)``, so text from configs and data is escaped.
"""

import math
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

Status = Literal["complete", "partial", "not run", "not available"]


@dataclass(frozen=True)
class Figure:
    """An inline image: a data URI, its alt text, and a caption saying what to look for."""

    uri: str
    alt: str
    caption: str


@dataclass(frozen=True)
class Table:
    """A DataFrame shown in the page (or only linked) and written beside it as CSV."""

    slug: str  # CSV file name stem, unique in the report
    caption: str
    frame: pd.DataFrame
    show: bool = True
    max_rows: int = 200
    wrap: bool = False  # long text in cells: let it wrap instead of scrolling sideways

    @property
    def html(self) -> str:
        """Escaped HTML of at most ``max_rows`` rows (the CSV has them all)."""
        frame = self.frame.head(self.max_rows)
        return frame.to_html(
            index=False,
            escape=True,
            na_rep="—",
            border=0,
            classes="data wrap" if self.wrap else "data",
            float_format=_float,
        )


def _float(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
        return f"{v:.3g}"
    return f"{v:.4g}"


@dataclass
class Section:
    """One section of the page."""

    slug: str
    title: str
    intro: str
    status: Status = "complete"
    notes: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    verdict: str = ""  # one line for the summary at the top and the CLI
    failed: bool = False  # something this section reports failed (a property, the gate)
