"""Build the report: run what is missing, gather, render ``index.html`` and a CSV per table.

The page is self-contained: CSS inlined, figures as data URIs, a Content-Security-Policy
that forbids loading anything from anywhere; jinja2 autoescapes every string.
"""

import contextlib
import html
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import jinja2
from markupsafe import Markup

from stability.errors import StabilityError
from stability.report.cache import code_state, latest_properties
from stability.report.gate_run import cached_gate
from stability.report.inputs import ReportData, Step, gather
from stability.report.progress import Display
from stability.report.runner import Runner
from stability.report.sections import SECTIONS
from stability.report.sections.figure_cache import FIGURE_CACHE
from stability.report.sections.page import Section, State
from stability.report.sections.summary import summarise
from stability.results.files import check_outputs, same_file, write_csv, write_text

TITLE = "Numerical stability of deep networks"


@dataclass
class BuildResult:
    """What a build produced, for the CLI's last lines and for tests."""

    path: Path
    bytes: int
    sections: list[Section]
    csv_files: list[Path]
    headline: str
    steps: list[Step] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    state: State = "nothing run"  # the page's overall health: healthy, warnings, failures

    @property
    def failed(self) -> bool:
        """A step failed, a property failed, or a section could not be drawn."""
        return (
            bool(self.errors)
            or any(s.failed for s in self.sections)
            or any(s.status == "failed" for s in self.steps)
        )


def _resource(name: str) -> str:
    return resources.files("stability.report").joinpath(name).read_text(encoding="utf-8")


def _safe_section(fn: Callable[[ReportData], Section], data: ReportData) -> tuple[Section, str]:
    try:
        return fn(data), ""
    except Exception as exc:  # one broken section must not hide the other eight
        name = fn.__name__.replace("_", " ")
        detail = f"{type(exc).__name__}: {exc}"
        section = Section(
            fn.__name__,
            name.capitalize(),
            "This section could not be drawn.",
            status="not available",
            notes=[f"Error while drawing: {detail}", traceback.format_exc(limit=3)],
            health="fail",
            reason=f"could not be drawn: {detail}",
        )
        return section, f"section {name!r}: {detail}"


def _prune_figures(folder: Path, before: float) -> None:
    """Drop cached figures this build did not use (their inputs or code have changed)."""
    if not folder.is_dir():
        return
    for path in folder.glob("*.txt"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < before - 1.0:
                path.unlink()


def headline(sections: Sequence[Section]) -> str:
    """One line: the verdicts of the sections that have one."""
    parts = [f"{s.title.split('. ', 1)[-1]}: {s.verdict}" for s in sections if s.verdict]
    return " · ".join(parts) if parts else "No results yet."


def draw_sections(
    data: ReportData, sections: Sequence[Callable[[ReportData], Section]] = SECTIONS
) -> tuple[list[Section], list[str]]:
    """Every section drawn from ``data`` (figures go through their cache), and the errors."""
    drawn, errors = [], []
    for fn in sections:
        section, error = _safe_section(fn, data)
        if section.health == "not run" and not section.reason:
            section.reason = section.notes[0] if section.notes else "nothing to show yet"
        drawn.append(section)
        if error:
            errors.append(error)
    return drawn, errors


def render(
    data: ReportData,
    out: Path,
    command: str = "stability report",
    sections: Sequence[Callable[[ReportData], Section]] = SECTIONS,
) -> BuildResult:
    """Draw every section from ``data`` and write the page and its CSV files."""
    start = time.perf_counter()
    wall_start = time.time()
    drawn, errors = draw_sections(data, sections)
    summary = summarise(data, drawn)
    tables = [*summary.tables, *(t for section in drawn for t in section.tables)]
    csv_files = [out.parent / f"{t.slug}.csv" for t in tables]
    # All checked before the first is written: a side CSV may not land on the store.
    check_outputs({f"table CSV ({p.stem})": p for p in csv_files}, store=data.db)
    for table, path in zip(tables, csv_files, strict=True):
        write_csv(table.frame, path, "table CSV")
    csv_names = {t.slug: p.name for t, p in zip(tables, csv_files, strict=True)}
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(_resource("template.html"))
    line = headline(drawn)
    page = template.render(
        title=TITLE,
        css=Markup(_resource("report.css")),
        generated=data.generated,
        commit=data.commit or "unknown",
        db=str(data.db),
        headline=line,
        summary=summary,
        sections=drawn,
        csv=csv_names,
        command=command,
    )
    write_text(out, page, "report file")
    if not errors and data.cache_dir is not None:
        _prune_figures(data.cache_dir / FIGURE_CACHE, before=wall_start)
    return BuildResult(
        path=out,
        bytes=out.stat().st_size,
        sections=drawn,
        csv_files=csv_files,
        headline=line,
        steps=data.steps,
        errors=errors,
        seconds=time.perf_counter() - start,
        state=summary.state,
    )


def check_report_paths(out: Path, db: Path) -> None:
    """Before any work: the page may not be the store or another database, and the store
    may not sit where the page's table CSVs go (``--db r/runs.csv --out r/index.html``)."""
    check_outputs({"--out": out}, store=db)
    if db.suffix.lower() == ".csv" and same_file(db.parent, out.parent):
        raise StabilityError(
            f"results database {str(db)!r} is a .csv file in the folder where the report "
            f"writes its table CSVs ({str(out.parent)!r}); a table could overwrite it: pass "
            "--out into another folder, or keep the store elsewhere"
        )


def build(
    out: Path,
    db: Path,
    root: Path,
    quick: bool = False,
    no_run: bool = False,
    jobs: int | None = None,
    display: Display | None = None,
    command: str = "stability report",
) -> BuildResult:
    """Run what is missing (unless ``no_run``), then render ``out`` from the store."""
    check_report_paths(out, db)
    if no_run and not db.exists():  # a typo must not render an empty page and pass
        raise StabilityError(
            f"results database {str(db)!r} does not exist; --no-run renders from a store "
            "only: pass --db with an existing store, or drop --no-run to compute one"
        )
    display = display or Display()
    start = time.perf_counter()
    if no_run:
        steps: list[Step] = []
        code = code_state(root, [db.parent, out.parent])
        props = latest_properties(db, root, code[0])
        gate = cached_gate(db, root, code)
    else:

        def predraw(steps: list[Step]) -> None:  # the figures' cache, warm for render()
            draw_sections(gather(db, root, None, steps, quick, None))

        runner = Runner(db, root, quick, jobs, display, [out.parent], predraw)
        result = runner.run()
        steps, props, gate = result.steps, result.properties, result.gate
    display.say("drawing figures and writing the page")
    data = gather(db, root, props, steps, quick, gate)
    built = render(data, out, command)
    built.seconds = time.perf_counter() - start
    for error in built.errors:
        display.say(f"warning: {html.unescape(error)}")
    return built
