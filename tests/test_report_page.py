"""The report answers at a glance: the verdict box on top, health apart from completeness,
scales and folds that keep it readable, every config reachable, history like with like.

Uses the tiny report of ``test_report`` (2 activations x 2 inits x 3 dtypes at depth 4,
a failing property, no baseline) and, for custom grids, small stores made here.
"""

import contextlib
import io
import re
from pathlib import Path

import pandas as pd
import pytest
from test_report import TinyReport, build_tiny_report

from stability.cli import main
from stability.report import render
from stability.report.inputs import ReportData
from stability.report.sections.page import FOLD_ROWS, Section, Table, overall
from stability.results.store import Store
from stability.sweep.run import SweepGrid, run_sweep


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyReport:
    return build_tiny_report(tmp_path_factory.mktemp("page"))


def _verdict_box(page: str) -> str:
    match = re.search(r'<section id="verdict".*?</section>', page, flags=re.S)
    assert match is not None, "the verdict box is missing"
    return match.group(0)


def _health_row(page: str, title: str) -> str:
    box = _verdict_box(page)
    match = re.search(rf"<tr><td><a [^>]*>{re.escape(title)}</a></td>.*?</tr>", box, flags=re.S)
    assert match is not None, title
    return match.group(0)


def test_verdict_box_comes_first_and_says_failures(tiny: TinyReport) -> None:
    box = _verdict_box(tiny.html)
    assert tiny.html.index('<section id="verdict"') < tiny.html.index("<main>")
    assert 'class="verdict state-failures"' in box
    assert "Failures: something failed or could not be judged" in box
    assert "failed: 6. Properties, 8. Gate" in box


def test_health_badges_carry_reasons_and_completeness_is_apart(tiny: TinyReport) -> None:
    gate = _health_row(tiny.html, "8. Gate")
    assert 'class="badge h-fail"' in gate and "CANNOT JUDGE (exit 2): no baseline" in gate
    assert '<td class="completeness">not available</td>' in gate
    heat = _health_row(tiny.html, "3. Heat map: growth from first to last layer")
    assert 'class="badge h-warn"' in heat and "3 of 12 configs explode" in heat
    assert '<td class="completeness">complete</td>' in heat
    props = _health_row(tiny.html, "6. Properties")
    assert "1 of 3 properties failed: test_breaks" in props
    assert 'class="badge h-pass"' in _health_row(tiny.html, "1. Environment")


def test_recommendation_grid_per_activation_and_dtype(tiny: TinyReport) -> None:
    box = _verdict_box(tiny.html)
    grid = re.search(r'<table class="grid" id="recommendation">.*?</table>', box, flags=re.S)
    assert grid is not None
    header = re.findall(r"<th>([^<]+)</th>", grid.group(0))
    assert header == ["activation", "float32", "float16", "bfloat16"]
    rows = re.findall(r'<th scope="row">([^<]+)</th>', grid.group(0))
    assert rows == ["relu", "tanh"]
    assert grid.group(0).count("<b>kaiming_normal</b>") == 6
    assert "σw² 2" in grid.group(0)
    recs = pd.read_csv(tiny.out.parent / "recommendation.csv")
    relu = recs[(recs["activation"] == "relu") & (recs["dtype"] == "float32")].iloc[0]
    assert relu["best_init"] == "kaiming_normal" and relu["stable"] == 1 and relu["tried"] == 2
    assert relu["best_sigma_w2"] == pytest.approx(2.0)


def test_worst_offenders_with_a_reason_each(tiny: TinyReport) -> None:
    box = _verdict_box(tiny.html)
    items = re.findall(r"<li><b>(.*?)</b>.*?<span class=\"why\">(.*?)</span>", box, flags=re.S)
    assert items, "no offenders listed"
    config, why = items[0]
    assert config.startswith("relu/standard_normal, depth 4, width 16")
    assert "variance grows by 10^" in why
    offenders = pd.read_csv(tiny.out.parent / "offenders.csv")
    assert offenders["reason"].notna().all()


def test_no_pandas_na_and_no_inner_scroll_box(tiny: TinyReport) -> None:
    assert "&lt;NA&gt;" not in tiny.html and "<NA>" not in tiny.html
    assert "max-height" not in tiny.html
    assert ".scroll { overflow-x: auto" in tiny.html


def test_other_dtypes_are_folded_and_said_left_out(tiny: TinyReport) -> None:
    assert '<details class="fold"><summary>float16 heat map:' in tiny.html
    assert '<details class="fold"><summary>bfloat16 heat map:' in tiny.html
    assert "Not drawn here: 8 of 12 stored configs (4 in bfloat16 at depth 4" in tiny.html
    growth = pd.read_csv(tiny.out.parent / "growth.csv")
    assert len(growth) == 12  # every stored config reachable
    assert {"margin", "borderline", "reason"} <= set(growth.columns)


def test_print_opens_every_fold(tiny: TinyReport) -> None:
    css = tiny.html[tiny.html.index("@media print") :]
    assert "details::details-content" in css and "content-visibility: visible" in css


def test_precision_says_why_panels_are_blank(tiny: TinyReport) -> None:
    assert "bfloat16: every fraction is exactly 0 in every layer of these configs" in tiny.html


def _data(tmp_path: Path, sections_input: pd.DataFrame | None = None) -> ReportData:
    return ReportData(
        db=tmp_path / "none.db",
        root=tmp_path,
        sweep=pd.DataFrame(),
        sweep_history=pd.DataFrame(),
        runs=pd.DataFrame(),
        bench=pd.DataFrame(),
        properties=None,
        cache_dir=None,
    )


def test_long_tables_fold_with_a_summary_line(tmp_path: Path) -> None:
    long = pd.DataFrame({"n": range(FOLD_ROWS + 1)})
    short = pd.DataFrame({"n": range(FOLD_ROWS)})

    def one(data: ReportData) -> Section:
        section = Section("one", "1. One", "intro", health="pass", reason="fine")
        section.tables += [Table("long", "Long table", long), Table("short", "Short", short)]
        section.tables.append(Table("forced", "Forced open", long, open=True))
        return section

    result = render(_data(tmp_path), tmp_path / "out" / "index.html", sections=[one])
    page = result.path.read_text()
    assert re.search(
        rf'<details class="table fold">\s*<summary><span class="caption">Long table</span>\s*'
        rf'<span class="more">{FOLD_ROWS + 1} rows</span>',
        page,
    )
    assert '<span class="caption">Short' not in page  # open tables use <p class="caption">
    assert page.count('<details class="table fold">') == 1
    assert result.state == "healthy"


def test_overall_state_is_the_worst_health() -> None:
    def section(health: str) -> Section:
        return Section(health, health, "", health=health, reason=f"because {health}")  # type: ignore[arg-type]

    assert overall([section("pass"), section("warn")])[0] == "warnings"
    state, reasons = overall([section("warn"), section("fail"), section("not run")])
    assert state == "failures" and reasons == ["fail: because fail", "warn: because warn"]
    assert overall([section("pass"), section("not run")]) == ("healthy", [])
    assert overall([section("not run")])[0] == "nothing run"


def test_broken_section_is_a_failure_with_its_reason(tmp_path: Path) -> None:
    def broken(data: ReportData) -> Section:
        raise ValueError("boom")

    result = render(_data(tmp_path), tmp_path / "out" / "index.html", sections=[broken])
    assert result.state == "failures"
    assert result.sections[0].reason == "could not be drawn: ValueError: boom"


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A user's own grid: 2 depths x 2 dtypes, run twice; a one-cell grid of another shape;
    a third shape at two depths."""
    root = tmp_path_factory.mktemp("custom")
    db = root / "results" / "stability.db"
    grid = SweepGrid(
        activations=("relu", "tanh"), inits=("kaiming_normal", "standard_normal"),
        depths=(2, 5), widths=(8,), dtypes=("float32", "float16"), seeds=(0,), batches=(4,),
    )  # fmt: skip
    with Store.open(db) as store:
        run_sweep(grid, store, ["first"])
        run_sweep(grid, store, ["second"])
        run_sweep(
            SweepGrid(
                activations=("relu",),
                inits=("kaiming_normal",),
                depths=(3,),
                widths=(16,),
                dtypes=("float32",),
                seeds=(0,),
                batches=(4,),
            ),
            store,
            ["other"],
        )
        run_sweep(SweepGrid(activations=("relu",), inits=("kaiming_normal",), depths=(2, 3),
                            widths=(32,), dtypes=("float32",), seeds=(0,), batches=(4,)),
                  store, ["third"])  # fmt: skip
    out = root / "reports" / "index.html"
    with contextlib.chdir(root), contextlib.redirect_stdout(io.StringIO()):
        main(["report", "--no-run", "--db", str(db), "--out", str(out)])
    return out, out.read_text()


def test_several_depths_draw_growth_against_depth(custom: tuple[Path, str]) -> None:
    _, page = custom
    assert page.count('alt="log10 growth against depth') == 2
    assert "Growth against depth for width 8, batch 4, depths 2, 5" in page
    assert (
        '<details class="fold"><summary>Growth against depth, width 32, batch 4, depths 2, 3'
        in page
    )


def test_configs_left_out_of_figures_are_named(custom: tuple[Path, str]) -> None:
    out, page = custom
    # The width-16 grid has another shape: said, and in the table.
    assert "1 in float32 at depth 3, width 16, batch 4" in page
    growth = pd.read_csv(out.parent / "growth.csv")
    assert len(growth) == 2 * 2 * 2 * 2 + 1 + 2
    other = re.search(r"Other network shapes in the store \(([^)]*)\)", page)
    assert other is not None
    assert set(other.group(1).split("; ")) == {
        "depth 2, width 8, batch 4", "depth 3, width 16, batch 4",
        "depth 2, width 32, batch 4", "depth 3, width 32, batch 4",
    }  # fmt: skip


def test_history_compares_runs_of_the_same_grid_only(custom: tuple[Path, str]) -> None:
    out, page = custom
    shares = pd.read_csv(out.parent / "stability-history.csv")
    assert shares.groupby("grid")["run_id"].apply(list).sort_values().tolist() == [
        [1, 2], [3], [4],
    ]  # fmt: skip
    assert "4 sweep runs over 3 distinct grids" in page
    assert re.search(r"Run once, nothing to compare yet: grid \w+: 1 cells, float32, depth 3", page)
    runs = pd.read_csv(out.parent / "runs.csv")
    assert runs["grid"].notna().all()
