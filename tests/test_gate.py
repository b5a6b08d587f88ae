"""The gate's verdicts and exit codes on tiny grids: 0 pass, 1 regression, 2 cannot judge."""

import dataclasses
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from stability import baseline as bl
from stability import gate
from stability.cli import main
from stability.config import MLPConfig
from stability.inits import INITS
from stability.sweep import Cell

TINY = [
    Cell(MLPConfig(depth=3, width=16, dtype="float64", seed=0), 8),
    Cell(MLPConfig(depth=3, width=16, dtype="float32", seed=0), 8),
]
EFFICIENCY = [0.50, 0.52, 0.49, 0.51, 0.50, 0.53, 0.48, 0.51, 0.50, 0.52]


@pytest.fixture(autouse=True)
def tiny_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two small cells and canned efficiencies: the logic under test, not the machine."""
    monkeypatch.setattr(bl, "grid", lambda: list(TINY))
    monkeypatch.setattr(
        bl, "efficiency_samples", lambda rounds=0: {"efficiency": EFFICIENCY, "nonfinite_losses": 0}
    )


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "baselines" / "baseline.json"
    assert main(["baseline", "--reason", "test", "--out", str(path)]) == 0
    return path


def run_gate(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["gate", "--baseline", str(path), *extra])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_unchanged_code_passes(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_gate(base, capsys)
    assert code == gate.PASS, out
    assert "gate: PASS" in out and "train-step efficiency" in out


def test_baseline_records_who_when_why(base: Path) -> None:
    doc = json.loads(base.read_text())
    assert doc["created"]["why"] == "test" and doc["created"]["by"] and doc["created"]["at"]
    assert doc["environment"] == bl.fingerprint()


def test_baseline_needs_a_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["baseline", "--reason", " ", "--out", str(tmp_path / "b.json")]) == 2
    assert "reason" in capsys.readouterr().err


def _corrupt(path: Path) -> None:
    path.write_text('{"format": "stability-baseline", "vers')


def _wrong_version(path: Path) -> None:
    doc = json.loads(path.read_text())
    doc["version"] = 99
    path.write_text(json.dumps(doc))


def _foreign(path: Path) -> None:
    path.write_text(json.dumps({"benchmarks": []}))


def _other_machine(path: Path) -> None:
    doc = json.loads(path.read_text())
    doc["environment"]["cpu_model"] = "Some Other CPU"
    path.write_text(json.dumps(doc))


def _missing(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_missing, "no baseline at"),
        (_corrupt, "is unreadable"),
        (_foreign, "is not a stability baseline"),
        (_wrong_version, "format version 99"),
        (_other_machine, "another environment"),
    ],
    ids=["missing", "corrupt", "foreign", "version", "environment"],
)
def test_cannot_judge_exits_2(
    base: Path, capsys: pytest.CaptureFixture[str], spoil: Any, message: str
) -> None:
    spoil(base)
    code, out = run_gate(base, capsys)
    assert code == gate.CANNOT_JUDGE, out
    assert message in out
    assert "stability baseline --reason" in out  # says what to do


def test_changed_default_init_fails_with_readable_diff(
    base: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As if MLPConfig's default init became xavier_normal."""
    changed = [Cell(dataclasses.replace(c.config, init="xavier_normal"), c.batch) for c in TINY]
    monkeypatch.setattr(bl, "grid", lambda: changed)
    new_defaults = {**bl.defaults(), "init": "xavier_normal"}
    monkeypatch.setattr(bl, "defaults", lambda: new_defaults)
    code, out = run_gate(base, capsys, "--no-throughput")
    assert code == gate.REGRESSION, out
    assert "MLPConfig.init" in out and "kaiming_normal" in out and "xavier_normal" in out


def test_halved_kaiming_variance_fails(
    base: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A planted numerical change: Kaiming's std scaled by sqrt(1/2)."""
    k = INITS["kaiming_normal"]

    def halved(weight: Any, gen: Any) -> None:
        k.apply(weight, gen)
        weight.data.mul_(math.sqrt(0.5))

    monkeypatch.setitem(INITS, "kaiming_normal", dataclasses.replace(k, apply=halved))
    code, out = run_gate(base, capsys, "--no-throughput")
    assert code == gate.REGRESSION, out
    assert "act_var L3" in out and "-87.50%" in out  # 0.5^3 at layer 3
    assert "rtol 1e-07" in out and "rtol 1.3e-06" in out


def test_slower_efficiency_is_a_regression(
    base: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = [e * 0.6 for e in EFFICIENCY]
    monkeypatch.setattr(
        bl, "efficiency_samples", lambda rounds=0: {"efficiency": slow, "nonfinite_losses": 0}
    )
    code, out = run_gate(base, capsys)
    assert code == gate.REGRESSION, out


def test_slowdown_rule_needs_size_and_significance() -> None:
    rng = random.Random(0)
    base = [1 + rng.gauss(0, 0.02) for _ in range(30)]
    same = [1 + rng.gauss(0, 0.02) for _ in range(30)]
    small = [1.03 + rng.gauss(0, 0.02) for _ in range(30)]  # significant, under 5 %
    big = [1.25 + rng.gauss(0, 0.02) for _ in range(30)]
    noisy = [1.25, 0.8]  # beyond 5 % by the medians, but two samples prove nothing
    judged = {
        name: gate.judge_slowdown(name, base, xs, 0.05, higher_is_slower=True).verdict
        for name, xs in [("same", same), ("small", small), ("big", big), ("noisy", noisy)]
    }
    assert judged == {"same": "ok", "small": "ok", "big": "REGRESSION", "noisy": "ok"}


def test_mann_whitney_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(1)
    for shift in (0.0, 0.3, 1.0):
        x = [rng.gauss(shift, 1) for _ in range(20)]
        y = [round(rng.gauss(0, 1), 1) for _ in range(25)]  # ties
        ours = gate.mann_whitney_greater(x, y)
        ref = stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic").pvalue
        assert ours == pytest.approx(ref, rel=1e-9)


def test_against_unknown_revision_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["gate", "--against", "no-such-revision-xyz"])
    assert code == gate.CANNOT_JUDGE
    assert "cannot check out" in capsys.readouterr().out
