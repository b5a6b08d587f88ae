"""Drawn figures, cached as encoded data URIs keyed by the report's code and the inputs.

Drawing the atlas costs seconds; a re-render with nothing new reuses the encoded image.
``build`` prunes the cached files a build did not use.
"""

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure as MplFigure

from stability.errors import StabilityError
from stability.report import figures
from stability.report.inputs import ReportData
from stability.report.sections.page import Figure
from stability.results.files import write_text

FIGURE_CACHE = "figures"
REPORT_DIR = Path(__file__).resolve().parents[1]  # stability/report: every drawing source
_CODE_VERSION: list[str] = []


def code_version() -> str:
    """Hash of the report's own sources and matplotlib: a change redraws every figure."""
    if not _CODE_VERSION:
        h = hashlib.sha256(matplotlib.__version__.encode())
        for path in sorted(REPORT_DIR.rglob("*")):
            if path.suffix in (".py", ".html", ".css"):
                h.update(str(path.relative_to(REPORT_DIR)).encode())
                h.update(path.read_bytes())
        _CODE_VERSION.append(h.hexdigest())
    return _CODE_VERSION[0]


def _input_hash(h: "hashlib._Hash", item: object) -> None:
    if isinstance(item, pd.DataFrame):
        h.update(repr((list(item.columns), item.shape)).encode())
        h.update(pd.util.hash_pandas_object(item, index=True).to_numpy().tobytes())
    else:
        h.update(repr(item).encode())


def cached_figure(
    data: ReportData,
    name: str,
    inputs: Sequence[object],
    draw: Callable[[], MplFigure],
    alt: str,
    caption: str,
    fmt: str = "svg",
    fold: str = "",
) -> Figure:
    """Draw (or take from the cache, keyed by the code and the inputs) and encode a figure."""
    h = hashlib.sha256(f"{name}|{fmt}|{code_version()}".encode())
    for item in inputs:
        _input_hash(h, item)
    path = None
    if data.cache_dir is not None:
        path = data.cache_dir / FIGURE_CACHE / f"{name}-{h.hexdigest()[:24]}.txt"
        if path.exists():
            with contextlib.suppress(OSError):  # a read-only store folder: still a hit
                path.touch()  # marks it used by this build; unused ones are pruned
            return Figure(path.read_text(encoding="ascii"), alt, caption, fold)
    uri = figures.encode(draw(), fmt)
    if path is not None:
        # A cache is a nicety: an unwritable one costs a redraw, and a write cut short by a
        # full disk must not leave a truncated image to be served next time (atomic).
        with contextlib.suppress(OSError, StabilityError):
            write_text(path, uri, "cached figure")
    return Figure(uri, alt, caption, fold)
