"""The page model: a section holds notes, figures and tables; the template lays them out.

A section carries two separate things: its *health* (pass, warn, fail, not run, each with
a reason: what a reader should worry about) and its *status* (complete, partial, not run,
not available: whether everything it wanted to show was there). Tables are pandas
DataFrames; ``Table.html`` renders them with ``DataFrame.to_html(escape=True)``, so text
from configs and data is escaped. Long tables and secondary figures fold into <details>.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

Status = Literal["complete", "partial", "not run", "not available"]
Health = Literal["pass", "warn", "fail", "not run"]
State = Literal["healthy", "warnings", "failures", "nothing run"]
FOLD_ROWS = 12  # a table longer than this starts folded, so a section stays a few screens


@dataclass(frozen=True)
class Figure:
    """An inline image: a data URI, its alt text, and a caption saying what to look for.

    ``fold`` puts it in a collapsed <details> whose summary line is ``fold``."""

    uri: str
    alt: str
    caption: str
    fold: str = ""


@dataclass(frozen=True)
class Table:
    """A DataFrame shown in the page (or only linked) and written beside it as CSV."""

    slug: str  # CSV file name stem, unique in the report
    caption: str
    frame: pd.DataFrame
    show: bool = True
    max_rows: int = 200
    wrap: bool = False  # long text in cells: let it wrap instead of scrolling sideways
    open: bool | None = None  # None: open when at most FOLD_ROWS rows

    @property
    def folded(self) -> bool:
        """Shown inside a collapsed <details> (a summary line says what is inside)."""
        return not (self.open if self.open is not None else len(self.frame) <= FOLD_ROWS)

    @property
    def html(self) -> str:
        """Escaped HTML of at most ``max_rows`` rows (the CSV has them all)."""
        frame = self.frame.head(self.max_rows).copy()
        for column in frame.columns:  # pandas' nullable types print <NA>: show a dash
            if isinstance(frame[column].dtype, pd.api.extensions.ExtensionDtype):
                series = frame[column]
                frame[column] = series.astype(object).where(series.notna(), np.nan)
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
    health: Health = "not run"  # until the section judges what it shows
    reason: str = ""  # why this health, one line

    def judge(self, health: Health, reason: str) -> None:
        """Set the health and its reason; a worse health already set is kept."""
        if HEALTH_RANK[health] >= HEALTH_RANK[self.health]:
            self.health, self.reason = health, reason


HEALTH_RANK: dict[Health, int] = {"not run": 0, "pass": 1, "warn": 2, "fail": 3}


def overall(sections: Sequence[Section]) -> tuple[State, list[str]]:
    """The page's state from its sections' health, and the reasons behind it (worst first)."""
    fails = [f"{s.title}: {s.reason}" for s in sections if s.health == "fail"]
    warns = [f"{s.title}: {s.reason}" for s in sections if s.health == "warn"]
    if fails:
        return "failures", fails + warns
    if warns:
        return "warnings", warns
    if any(s.health == "pass" for s in sections):
        return "healthy", []
    return "nothing run", ["no section has results yet"]
