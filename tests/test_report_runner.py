"""The report's runner: sweeps resume from the store, the property suite and the gate's
verdict are reused from the cache until the code (or the baseline) changes.
"""

import io
import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_report_gate import canned, runner, write_baseline  # noqa: F401 (a fixture)

from stability.measure import baseline as bl
from stability.measure import gate as gatekeeper
from stability.report.gate_run import cached_gate
from stability.report.inputs import Step
from stability.report.progress import Display
from stability.report.runner import Runner
from stability.results.store import Store
from stability.sweep.run import SweepGrid


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A minimal project (not a git checkout) with one fast property file."""
    (tmp_path / "properties").mkdir()
    (tmp_path / "properties" / "test_tiny.py").write_text(
        textwrap.dedent(
            """
            CHAPTER = "Tiny"
            from hypothesis import given, strategies as st

            @given(st.integers())
            def test_ok(x: int) -> None:
                assert x == x

            def test_witness_ok() -> None:
                assert 1 != 2
            """
        )
    )
    (tmp_path / "properties" / "conftest.py").write_text(
        "from hypothesis import settings\n"
        "settings.register_profile('ci', max_examples=5, derandomize=True, deadline=None)\n"
    )
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    yield tmp_path


def test_property_run_is_reused_until_the_code_changes(project: Path) -> None:
    runner = Runner(project / "results" / "s.db", project, display=Display(io.StringIO()))
    first, run = runner.properties()
    assert first.status == "ran", first
    assert run is not None and run.junit.exists()
    second, again = runner.properties()
    assert second.status == "reused"
    assert again is not None and again.junit == run.junit
    time.sleep(0.01)
    (project / "properties" / "test_tiny.py").write_text(
        (project / "properties" / "test_tiny.py").read_text() + "\n# changed\n"
    )
    changed = Runner(project / "results" / "s.db", project, display=Display(io.StringIO()))
    third, _ = changed.properties()
    assert third.status == "ran"


def test_sweep_resumes_from_the_store(tmp_path: Path) -> None:
    grid = SweepGrid(
        activations=("relu",), inits=("kaiming_normal",), depths=(3,), widths=(8,),
        dtypes=("float32",), seeds=(0,), batches=(4,),
    )  # fmt: skip
    runner = Runner(tmp_path / "s.db", tmp_path, display=Display(io.StringIO()), jobs=1)
    with Store.open(tmp_path / "s.db") as store:
        first = runner.sweep(store, "tiny", grid)
        second = runner.sweep(store, "tiny", grid)
        sweep_runs = int((store.runs()["kind"] == "sweep").sum())
    assert isinstance(first, Step) and first.status == "ran"
    assert second.status == "reused"
    assert sweep_runs == 1  # nothing to do: no empty run is recorded


def _count_judgements(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    judge = gatekeeper.judge_baseline

    def counted(path: Path | str = bl.DEFAULT_PATH, throughput: bool = True) -> gatekeeper.Verdict:
        calls.append(1)
        return judge(path, throughput)

    monkeypatch.setattr(gatekeeper, "judge_baseline", counted)
    return calls


@pytest.mark.usefixtures("canned")
def test_gate_verdict_is_cached_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_baseline(tmp_path)
    calls = _count_judgements(monkeypatch)
    steps, first = runner(tmp_path).gate()
    assert [s.status for s in steps] == ["ran", "ran"] and len(calls) == 1
    assert first is not None and first.code == gatekeeper.PASS and len(first.rows) == 37
    # A second report run (a new runner, as a new process would have) judges nothing.
    monkeypatch.setattr(bl, "efficiency_samples", lambda rounds=0: pytest.fail("timed again"))
    steps, again = runner(tmp_path).gate()
    assert [s.status for s in steps] == ["reused", "reused"] and len(calls) == 1
    assert again == first
    # --no-run finds the same verdict.
    r = runner(tmp_path)
    assert cached_gate(r.db, tmp_path, r.code) == first


@pytest.mark.usefixtures("canned")
def test_rebaseline_invalidates_the_cached_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = write_baseline(tmp_path)
    calls = _count_judgements(monkeypatch)
    runner(tmp_path).gate()
    doc["created"]["why"] = "rebaselined"
    (tmp_path / bl.DEFAULT_PATH).write_text(json.dumps(doc))
    r = runner(tmp_path)
    assert cached_gate(r.db, tmp_path, r.code) is None  # nothing judged for these bytes yet
    steps, _ = r.gate()
    assert [s.status for s in steps] == ["ran", "ran"] and len(calls) == 2


@pytest.mark.usefixtures("canned")
def test_a_broken_gate_is_a_failed_step_not_a_broken_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_baseline(tmp_path)

    def broken(path: Path | str = bl.DEFAULT_PATH, throughput: bool = True) -> gatekeeper.Verdict:
        raise RuntimeError("grid exploded")

    monkeypatch.setattr(gatekeeper, "judge_baseline", broken)
    steps, result = runner(tmp_path).gate()
    assert steps[0].status == "failed" and "grid exploded" in steps[0].detail
    assert result is None  # the section then says the figures were not judged


def test_without_a_baseline_the_gate_steps_skip(tmp_path: Path) -> None:
    steps, result = runner(tmp_path).gate()
    assert [s.status for s in steps] == ["skipped", "skipped"] and result is None
    assert "no baseline" in steps[0].detail


@pytest.mark.parametrize("quick", [False, True])
def test_the_first_line_says_the_expected_time_once_prefixed(tmp_path: Path, quick: bool) -> None:
    """'report: expected at most about ...' (it read 'report: report: expected' before)."""
    out = io.StringIO()
    runner = Runner(tmp_path / "s.db", tmp_path, quick=quick, display=Display(out))
    runner.display.say(runner.opening_line())
    mode = "--quick: " if quick else ""
    assert out.getvalue().startswith(f"report: {mode}expected at most about "), out.getvalue()
