"""The report's gate section: it renders the runner's verdict rows and judges nothing.

Figures are judged by the runner (``Runner.gate``) and cached; the section draws the rows
it is given, even when the gate itself cannot run. On a machine whose CPU differs from the
baseline's, the figures are judged and the throughput row is NOT JUDGED with its reason.
"""

import contextlib
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest

from stability.cli import main
from stability.measure import baseline as bl
from stability.measure import gate as gatekeeper
from stability.measure.gate import Row
from stability.report import render
from stability.report.gate_run import figures_step, gate_result
from stability.report.inputs import GateResult, gather
from stability.report.progress import Display
from stability.report.runner import Runner
from stability.report.sections import gate
from stability.results.store import Store

EVIL = "<script>alert('x')</script>"
MOVED = "relu/kaiming_normal/float64/d10w64/b64/s0"  # a cell of the baseline's grid
EFFICIENCY = [0.50, 0.52, 0.49, 0.51, 0.50, 0.53, 0.48, 0.51, 0.50, 0.52]


def write_baseline(root: Path, **environment: str) -> dict[str, Any]:
    """A baseline of this machine's stability figures (0.2 s; the throughput part is fake);
    ``environment`` overrides fingerprint fields, as if written on another machine."""
    doc: dict[str, Any] = {
        "format": bl.FORMAT, "version": bl.VERSION,
        "created": {"by": EVIL, "at": "2026-01-01T00:00:00+00:00", "why": "test", "commit": None},
        "environment": {**bl.fingerprint(), **environment}, "defaults": bl.defaults(),
        "stability": bl.stability_figures(), "throughput": {"efficiency": EFFICIENCY},
    }  # fmt: skip
    (root / "baselines").mkdir(exist_ok=True)
    (root / bl.DEFAULT_PATH).write_text(json.dumps(doc))
    return doc


def move_a_figure(root: Path, doc: dict[str, Any]) -> None:
    """Plant a figure change of 0.1 %, beyond the 1e-4 tolerance."""
    doc["stability"][MOVED]["grad_var"][3] *= 1.001
    (root / bl.DEFAULT_PATH).write_text(json.dumps(doc))


@pytest.fixture
def canned(monkeypatch: pytest.MonkeyPatch) -> None:
    """The baseline's own efficiencies when timed: the logic under test, not the machine."""
    monkeypatch.setattr(
        bl, "efficiency_samples", lambda rounds=0: {"efficiency": EFFICIENCY, "nonfinite_losses": 0}
    )


def runner(root: Path) -> Runner:
    return Runner(root / "results" / "s.db", root, display=Display(io.StringIO()))


def figures_only(root: Path) -> GateResult | None:
    """The runner's figure verdict without the throughput step."""
    r = runner(root)
    return gate_result(figures_step(root, r.cache, r.code, r.display)[1], None)


def test_gate_section_renders_the_runners_verdict(tmp_path: Path) -> None:
    doc = write_baseline(tmp_path)
    data = gather(tmp_path / "absent.db", tmp_path, None, gate=figures_only(tmp_path))
    passed = gate.gate(data)
    assert passed.verdict == "PASS (exit 0): 0 of 36 checks not ok, stability figures only"
    assert not passed.failed and passed.status == "partial"  # throughput was not measured
    built = render(data, tmp_path / "out" / "index.html", sections=[gate.gate])
    page = built.path.read_text()
    assert EVIL not in page and "&lt;script&gt;" in page  # who wrote the baseline, escaped
    # A moved figure (judged anew: the baseline's bytes changed) and a throughput regression.
    move_a_figure(tmp_path, doc)
    judged = figures_only(tmp_path)
    assert judged is not None
    slow = Row("throughput", "train-step efficiency", "0.6", "0.3", "x0.5 (p=1e-05)", "-",
               "REGRESSION")  # fmt: skip
    throughput = {"row": dataclasses.asdict(slow), "rounds": 20, "finished": "now"}
    rows = [*judged.rows, slow]
    data.gate = GateResult(rows, gatekeeper.REGRESSION, judged.code, judged.notes, throughput)
    failed = gate.gate(data)
    assert failed.verdict.startswith("REGRESSION (exit 1): 2 of 37 checks not ok")
    assert failed.failed and failed.status == "complete"
    table = failed.tables[0].frame
    assert table["item"].tolist()[:2] == [  # not ok first
        "train-step efficiency",
        f"{MOVED} grad_var L4",
    ]


def test_section_renders_cached_rows_without_running_the_gate(
    tmp_path: Path, canned: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Judged once by the runner; then ``report --no-run`` renders it with the gate broken."""
    move_a_figure(tmp_path, write_baseline(tmp_path))
    steps, _ = runner(tmp_path).gate()
    assert [s.status for s in steps] == ["ran", "ran"]

    def broken(*args: object, **kwargs: object) -> None:
        raise AssertionError("the section must not judge")

    monkeypatch.setattr(gatekeeper, "judge_baseline", broken)
    monkeypatch.setattr(gatekeeper, "measured_figures", broken)
    monkeypatch.setattr(bl, "efficiency_samples", broken)
    out = tmp_path / "reports" / "index.html"
    Store.open(tmp_path / "results" / "s.db").close()  # --no-run needs a store (an empty one)
    buf = io.StringIO()
    with contextlib.chdir(tmp_path), contextlib.redirect_stdout(buf):
        code = main(["report", "--no-run", "--db", str(tmp_path / "results" / "s.db"),
                     "--out", str(out)])  # fmt: skip
    assert code == 1  # the moved figure is a regression, read from the cache
    assert "Gate: REGRESSION (exit 1): 1 of 37 checks not ok, stability figures and " \
        "throughput" in buf.getvalue()  # fmt: skip
    gate_csv = (out.parent / "gate.csv").read_text()
    assert f"{MOVED} grad_var L4" in gate_csv and "train-step efficiency" in gate_csv
    assert "could not be drawn" not in out.read_text()


def test_foreign_cpu_judges_figures_not_throughput(tmp_path: Path, canned: None) -> None:
    """Another CPU: figures PASS, the throughput row NOT JUDGED with its reason."""
    doc = write_baseline(tmp_path, cpu_model="Some Other CPU")
    steps, result = runner(tmp_path).gate()
    assert [s.status for s in steps] == ["ran", "skipped"]
    section = gate.gate(gather(tmp_path / "absent.db", tmp_path, None, gate=result))
    assert section.verdict == "PASS (exit 0): 1 of 37 checks not ok, stability figures only"
    assert not section.failed
    reason = next(n for n in section.notes if n.startswith("Throughput not judged here"))
    assert "Some Other CPU" in reason and "--against" in reason
    table = section.tables[0].frame
    row = table[table["check"] == "throughput"].iloc[0]
    assert row["verdict"] == gatekeeper.NOT_JUDGED and "another machine" in row["reason"]
    # The figures are still judged there: a moved one is a regression.
    move_a_figure(tmp_path, doc)
    _, moved = runner(tmp_path).gate()
    failed = gate.gate(gather(tmp_path / "absent.db", tmp_path, None, gate=moved))
    assert failed.verdict.startswith("REGRESSION (exit 1): 2 of 37 checks not ok")
    assert failed.failed


def test_without_a_verdict_the_section_says_not_judged(tmp_path: Path) -> None:
    write_baseline(tmp_path)
    section = gate.gate(gather(tmp_path / "absent.db", tmp_path, None))
    assert section.status == "not run" and section.verdict == gate.NO_VERDICT
    assert not section.failed
    assert [t.slug for t in section.tables] == ["gate-baseline"]


def test_unusable_baseline_cannot_judge(tmp_path: Path) -> None:
    (tmp_path / "baselines").mkdir()
    (tmp_path / bl.DEFAULT_PATH).write_text("{not json")
    section = gate.gate(gather(tmp_path / "absent.db", tmp_path, None))
    assert section.verdict == "CANNOT JUDGE (exit 2): unusable baseline"
    assert any("unreadable" in n for n in section.notes)
