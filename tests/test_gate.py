"""The gate's verdicts and exit codes on tiny grids: 0 pass, 1 regression, 2 cannot judge.

Figures are judged on any machine, throughput only on the baseline's; a baseline that is
not what ``stability baseline`` writes exits 2; exit 1 means a regression and nothing else.
"""

import dataclasses
import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stability.cli import main
from stability.core.config import MLPConfig
from stability.core.inits import INITS
from stability.measure import baseline as bl
from stability.measure import gate, gate_against
from stability.measure.stats import mann_whitney_greater
from stability.sweep.run import Cell

EFFICIENCY = [0.50, 0.52, 0.49, 0.51, 0.50, 0.53, 0.48, 0.51, 0.50, 0.52]


def tiny_grid(activation: str | None = None, init: str | None = None) -> list[Cell]:
    """Two small cells whose first pair follows the defaults, as ``baseline.grid`` does."""
    first = {"activation": activation or "relu", "init": init or "kaiming_normal"}
    return [
        Cell(MLPConfig(depth=3, width=16, dtype=d, seed=0, **first), 8)  # type: ignore[arg-type]
        for d in ("float64", "float32")
    ]


@pytest.fixture(autouse=True)
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small cells and canned efficiencies: the logic under test, not the machine."""
    monkeypatch.setattr(bl, "grid", tiny_grid)
    monkeypatch.setattr(
        bl, "efficiency_samples", lambda rounds=0: {"efficiency": EFFICIENCY, "nonfinite_losses": 0}
    )


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "baselines" / "baseline.json"
    assert main(["baseline", "--reason", "test", "--out", str(path)]) == 0
    return path


def run_gate(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["gate", "--baseline", str(path), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def halve_kaiming(monkeypatch: pytest.MonkeyPatch) -> None:
    """A planted numerical change: Kaiming's std scaled by sqrt(1/2)."""
    k = INITS["kaiming_normal"]

    def halved(weight: Any, gen: Any) -> None:
        k.apply(weight, gen)
        weight.data.mul_(math.sqrt(0.5))

    monkeypatch.setitem(INITS, "kaiming_normal", dataclasses.replace(k, apply=halved))


def other_machine(doc: dict[str, Any]) -> None:
    doc["environment"]["cpu_model"] = "Some Other CPU"


def test_unchanged_code_passes(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_gate(base, capsys)
    assert code == gate.PASS, out
    assert "gate: PASS" in out and "train-step efficiency" in out


def test_baseline_records_who_when_why(base: Path) -> None:
    doc = json.loads(base.read_text())
    assert doc["created"]["why"] == "test" and doc["created"]["by"] and doc["created"]["at"]
    assert doc["environment"] == bl.fingerprint()


def test_baseline_needs_a_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["baseline", "--reason", " ", "--out", str(tmp_path / "b.json")]) == 2
    assert "reason" in capsys.readouterr().err


def test_foreign_machine_judges_figures_not_throughput(
    base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another CPU: figures pass, throughput is NOT JUDGED with its reason, exit 0."""
    edit(base, other_machine)
    code, out, err = run_gate(base, capsys)
    assert code == gate.PASS, out + err
    assert "NOT JUDGED" in out and "figure lists equal" in out
    assert "Some Other CPU" in err and "--against" in err  # why, and how to judge it


def test_foreign_machine_still_catches_halved_kaiming(
    base: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    edit(base, other_machine)
    halve_kaiming(monkeypatch)
    code, out, err = run_gate(base, capsys)
    assert code == gate.REGRESSION, out + err
    assert "act_var L3" in out and "-87.50%" in out  # 0.5^3 at layer 3
    assert "layer 3 act_var moved -87.50%" in err


def test_changed_default_is_named(
    base: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As if MLPConfig's default init became xavier_normal: the figures of the recorded grid
    still match, and the default itself is the regression."""
    real = {f.name: f.default for f in dataclasses.fields(MLPConfig)}
    monkeypatch.setattr(bl, "defaults", lambda: {**real, "init": "xavier_normal"})
    code, out, err = run_gate(base, capsys, "--no-throughput")
    assert code == gate.REGRESSION, out
    assert "MLPConfig.init" in out and "kaiming_normal" in out and "xavier_normal" in out
    assert "default init changed" in err


def test_slower_efficiency_is_a_regression(
    base: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = [e * 0.6 for e in EFFICIENCY]
    monkeypatch.setattr(
        bl, "efficiency_samples", lambda rounds=0: {"efficiency": slow, "nonfinite_losses": 0}
    )
    code, out, _ = run_gate(base, capsys)
    assert code == gate.REGRESSION, out


def test_slower_efficiency_on_another_machine_is_not_judged(
    base: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    edit(base, other_machine)
    slow = [e * 0.6 for e in EFFICIENCY]
    monkeypatch.setattr(
        bl, "efficiency_samples", lambda rounds=0: {"efficiency": slow, "nonfinite_losses": 0}
    )
    code, out, _ = run_gate(base, capsys)
    assert code == gate.PASS and "NOT JUDGED" in out


# -- hostile baselines: every one exits 2 with one reason, never 0 or 1 ------------------------
def _set(*keys: Any, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        target = doc
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return change


def _first_cell(doc: dict[str, Any]) -> str:
    return next(iter(doc["stability"]))


def _cell_figure(value: Any, dtype: str = "float64") -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        name = next(k for k, v in doc["stability"].items() if v["dtype"] == dtype)
        doc["stability"][name]["act_var"][1] = value

    return change


def _partial(doc: dict[str, Any]) -> None:
    doc["stability"] = {k: v for k, v in list(doc["stability"].items())[:1]}


def _drop_layer(doc: dict[str, Any]) -> None:
    doc["stability"][_first_cell(doc)]["grad_var"].pop()


def _huge_depth(doc: dict[str, Any]) -> None:
    doc["stability"][_first_cell(doc)]["config"]["depth"] = 10**30


HOSTILE: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "empty-stability": (_set("stability", value={}), "grid is not this code's grid"),
    "partial-grid": (_partial, "grid is not this code's grid"),
    "stability-list": (_set("stability", value=[]), "stability: expected an object"),
    "nan-figure": (_cell_figure(math.nan), "act_var[1]: expected a finite variance"),
    "inf-figure": (_cell_figure(math.inf), "act_var[1]: expected a finite variance"),
    "negative-figure": (_cell_figure(-1.0), "act_var[1]: expected a finite variance"),
    "string-figure": (_cell_figure("1.0"), "act_var[1]: expected a finite variance"),
    "bool-figure": (_cell_figure(True), "act_var[1]: expected a finite variance"),
    "huge-float32-figure": (
        _cell_figure(1e300, "float32"),
        "expected a finite variance in [0, 3.4e+38]",
    ),
    "short-layer-list": (_drop_layer, "grad_var: expected 3 layers"),
    "huge-depth": (_huge_depth, "config.depth: expected an integer"),
    "one-sample": (_set("throughput", "efficiency", value=[0.5]), "at least 3 samples"),
    "no-samples": (_set("throughput", "efficiency", value=[]), "a non-empty list"),
    "nan-efficiency": (_set("throughput", "efficiency", value=[math.nan] * 10), "efficiency"),
    "negative-efficiency": (_set("throughput", "efficiency", value=[-0.5] * 10), "efficiency"),
    "huge-efficiency": (_set("throughput", "efficiency", value=[1e300] * 10), "efficiency"),
    "efficiency-string": (_set("throughput", "efficiency", value="fast"), "a non-empty list"),
    "no-environment": (_set("environment", value=None), "environment: expected an object"),
    "environment-key-list": (_set("environment", "cpu_model", value=[1]), "environment.cpu_model"),
    "defaults-not-names": (_set("defaults", "init", value=5), "defaults.init: expected a name"),
    "unknown-default-init": (_set("defaults", "init", value="nope"), "unknown init 'nope'"),
    "no-created": (_set("created", value="yesterday"), "created: expected an object"),
    "bool-version": (_set("version", value=True), "format version True"),
    "version-99": (_set("version", value=99), "format version 99"),
    "foreign-format": (_set("format", value="other"), "is not a stability baseline"),
    "cell-not-object": (lambda d: d["stability"].update({_first_cell(d): 3}), "an object"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_baseline_exits_2(
    base: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    change, message = HOSTILE[case]
    edit(base, change)
    code, out, err = run_gate(base, capsys)
    assert code == gate.CANNOT_JUDGE, out + err
    assert message in err, err
    assert "stability baseline --reason" in err  # says what to do
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda p: p.unlink(), "no baseline at"),
        (lambda p: p.write_text('{"format": "stability-baseline", "vers'), "is unreadable"),
        (lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "is unreadable"),
        (lambda p: p.write_text("[" * 100_000), "is unreadable"),
        (lambda p: p.write_text(json.dumps({"benchmarks": []})), "is not a stability baseline"),
        (
            lambda p: p.write_text(p.read_text().replace('"version": 1', '"version": 1e999')),
            "format version inf",
        ),
    ],
    ids=["missing", "truncated", "binary", "deeply-nested", "foreign", "huge-version"],
)
def test_unreadable_baseline_exits_2(
    base: Path, capsys: pytest.CaptureFixture[str], spoil: Any, message: str
) -> None:
    spoil(base)
    code, out, err = run_gate(base, capsys)
    assert code == gate.CANNOT_JUDGE, out + err
    assert message in err


# -- exit 1 means a regression and nothing else ----------------------------------------------
def test_internal_error_exits_2_not_1(
    base: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(cells: Any) -> Any:
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(gate, "measured_figures", broken)
    code, _, err = run_gate(base, capsys)
    assert code == gate.CANNOT_JUDGE
    assert "cannot judge: ZeroDivisionError: planted" in err


def test_broken_pipe_keeps_the_verdict(
    base: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stability.measure import gate_format

    def closed(verdict: Any, fmt: str) -> str:
        raise BrokenPipeError

    monkeypatch.setattr(gate_format, "render", closed)
    code, _, _ = run_gate(base, capsys)
    assert code == gate.PASS


@pytest.mark.parametrize("pairs", ["0", "1", "-3"])
def test_too_few_pairs_exit_2(capsys: pytest.CaptureFixture[str], pairs: str) -> None:
    code = main(["gate", "--against", "HEAD", "--pairs", pairs])
    assert code == gate.CANNOT_JUDGE
    assert f"--pairs {pairs} is too few" in capsys.readouterr().err


def test_min_pairs_is_derived_from_the_test() -> None:
    n = gate_against.min_pairs()
    assert n >= 2  # 3 blocks a side can never reach p < 0.01
    samples = [float(i) for i in range(n * gate_against.AGAINST_BLOCKS)]
    assert mann_whitney_greater([s + 100 for s in samples], samples) < 0.01


# -- formats -----------------------------------------------------------------------------------
def test_json_format_follows_the_schema(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(base, other_machine)
    code, out, _ = run_gate(base, capsys, "--format", "json")
    doc = json.loads(out)
    assert doc["schema"] == "stability-gate/1" and doc["exit_code"] == code == 0
    assert doc["verdict"] == "pass" and doc["against"] is None
    assert doc["counts"]["not_judged"] == 1 and doc["counts"]["ok"] == len(doc["checks"]) - 1
    keys = {"check", "item", "baseline", "current", "change", "tolerance", "verdict", "reason"}
    assert all(set(c) == keys for c in doc["checks"])


def test_json_format_names_a_regression(
    base: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    halve_kaiming(monkeypatch)
    code, out, _ = run_gate(base, capsys, "--format", "json", "--no-throughput")
    doc = json.loads(out)
    assert code == doc["exit_code"] == 1 and doc["verdict"] == "regression"
    bad = [c for c in doc["checks"] if c["verdict"] == "regression"]
    assert bad and all("moved" in c["reason"] for c in bad)


def test_markdown_format(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(base, other_machine)
    code, out, _ = run_gate(base, capsys, "--format", "markdown")
    assert code == 0
    assert out.startswith("### ✅ stability gate: PASS (exit 0)")
    assert "| throughput | train-step efficiency |" in out and "NOT JUDGED" in out


def test_cannot_judge_json_goes_to_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_gate(tmp_path / "none.json", capsys, "--format", "json")
    assert code == 2 and json.loads(out)["verdict"] == "cannot_judge"
    assert "no baseline at" in err


# -- statistics --------------------------------------------------------------------------------
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
        ours = mann_whitney_greater(x, y)
        ref = stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic").pvalue
        assert ours == pytest.approx(ref, rel=1e-9)


# -- against another revision ------------------------------------------------------------------
def test_against_unknown_revision_exits_2(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_gate(base, capsys, "--against", "no-such-revision-xyz")
    assert code == gate.CANNOT_JUDGE, out + err
    assert "cannot check out 'no-such-revision-xyz'" in err
