"""The spectrum and phase-diagram sections, drawn from tiny stored records."""

import functools
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stability.measure.threads import threads
from stability.report import spectrum_cases
from stability.report.inputs import gather
from stability.report.progress import Display
from stability.report.runner import Runner
from stability.report.sections.phase import chi_1_bounds, phase_section
from stability.report.sections.spectrum import BAND_Z, judge_mean, spectrum_section
from stability.results.store import Store


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spectrum") / "s.db"
    with Store.open(path) as store:
        spectrum_cases.write(store, tiny_tables())
    return path


@functools.cache
def tiny_tables() -> dict[str, spectrum_cases.Rows]:
    """Every table of the two sections at toy size, once per test process (the tiny report
    of test_report.py stores them too); one thread: a second only waits (~5 s on one)."""
    with threads(1):
        return _tables()


def _tables() -> dict[str, spectrum_cases.Rows]:
    return {
        "spectrum_depth": spectrum_cases.spectrum_rows(16, 2, (1, 2, 4)),
        "spectrum_d2l": spectrum_cases.d2l_rows(count=20, seeds=2),
        "phase_diagram": spectrum_cases.phase_rows(
            [(1.2, 0.3)], quick=True, sw2_grid=(0.5, 1.5, 3.0), sb2_grid=(0.0, 0.2)
        ),
        "critical_line": spectrum_cases.critical_rows(),
    }


def test_spectrum_section_draws_and_judges(db: Path) -> None:
    section = spectrum_section(gather(db, db.parent, None))
    assert section.status == "complete"
    assert len(section.figures) == 2
    assert {t.slug for t in section.tables} == {"spectrum-depth", "spectrum-d2l"}
    frame = section.tables[0].frame
    # orthogonal linear layers are exactly isometric: every singular value is 1
    iso = frame[(frame["activation"] == "identity") & (frame["weights"] == "orthogonal")]
    assert (iso["within_10"] == 1.0).all()
    assert section.health in ("pass", "warn")


def test_phase_section_compares_measured_with_mean_field(db: Path) -> None:
    section = phase_section(gather(db, db.parent, None))
    assert section.status == "complete"
    measured = section.tables[0].frame
    assert len(measured) == 1
    assert section.health == "pass", section.reason  # chi_1 within 5 standard errors


def test_chi_1_is_judged_with_students_t_for_its_network_count() -> None:
    """10 standard errors off: a miss with 16 networks (bound 8.3), chance with 8 (17.1)."""
    rows = pd.DataFrame(
        {"chi_1": [1.0, 1.0], "measured_chi_1": [1.104, 1.104], "measured_chi_1_se": [0.01, 0.01],
         "measured_nets": [16, 8], "measured_width": [250, 250]}
    )  # fmt: skip
    bound, excess = chi_1_bounds(rows)
    assert np.allclose(excess, 10.0) and 8.2 < bound[0] < 8.4 and 17.0 < bound[1] < 17.2
    assert list(excess > bound) == [True, False]
    old = rows.drop(columns=["measured_nets", "measured_width"])  # stored before the count
    assert list(chi_1_bounds(old)[0]) == [5.0, 5.0]


def test_sections_say_not_run_without_records(tmp_path: Path) -> None:
    data = gather(tmp_path / "none.db", tmp_path, None)
    assert spectrum_section(data).status == "not run"
    assert phase_section(data).status == "not run"


def test_runner_step_computes_once_per_code_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []

    def fake(quick: bool) -> dict[str, spectrum_cases.Rows]:
        calls.append(quick)
        return {"critical_line": [{"activation": "tanh", "sigma_b2": 0.0, "sigma_w2": 1.0}]}

    monkeypatch.setattr(spectrum_cases, "compute", fake)
    runner = Runner(tmp_path / "s.db", tmp_path, quick=True, display=Display(io.StringIO()))
    assert runner.spectrum().status == "ran"
    assert runner.spectrum().status == "reused"
    assert calls == [True]
    with Store.open(tmp_path / "s.db") as store:
        assert store.records("critical_line")["sigma_w2"].tolist() == [1.0]


def test_spectrum_section_judges_the_mean_by_its_finite_width_band() -> None:
    """A row 0.4 decades below free probability passes where the band puts one network
    there (centre -0.3, sd 0.2) and warns where the band is narrow (centre 0, sd 0.02)."""
    base = {"activation": "relu", "weights": "gaussian", "depth": 64, "width": 128,
            "jj_mean": 10**-0.4, "predicted_jj_mean": 1.0}  # fmt: skip
    wide = pd.DataFrame([{**base, "band_log10_offset": -0.3, "band_log10_sd": 0.2}])
    narrow = pd.DataFrame([{**base, "band_log10_offset": 0.0, "band_log10_sd": 0.02}])
    for frame in (wide, narrow):
        frame["mean_off"] = np.log10(frame["jj_mean"] / frame["predicted_jj_mean"])
    assert float(judge_mean(wide)["z"].iloc[0]) < BAND_Z
    assert float(judge_mean(narrow)["z"].iloc[0]) > BAND_Z


def test_spectrum_section_passes_on_its_own_band(db: Path) -> None:
    section = spectrum_section(gather(db, db.parent, None))
    assert section.health == "pass", section.reason
    assert "finite-width band" in section.verdict
    assert any("depth <= width/4" in note for note in section.notes)
