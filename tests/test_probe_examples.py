"""``stability probe`` on the examples (a pre-norm transformer, a ResNet-style MLP, a CNN),
from the command line as a user runs it, and the report's "Your model" section drawn from
what it stored.

The examples are imported as ``examples.<name>`` from the repository root, the working
directory of these tests, as a user's package is from theirs. Sizes are small (width 16,
a batch of 4 to 16): each probe is one forward and backward pass of well under a second.
"""

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from stability.cli import main
from stability.report.inputs import ReportData
from stability.report.sections.your_model import NOT_RUN, your_model
from stability.results.store import Store

REPO = Path(__file__).resolve().parents[1]

EXAMPLES = {
    "transformer": (
        ["--model", "examples.transformer:build", "--model-args",
         '{"depth": 2, "width": 16, "heads": 2}', "--input", "examples.transformer:make_batch",
         "--loss", "cross_entropy"],
        ["embed", "layers.0.ln1", "layers.0.attn.qkv", "layers.0.attn.softmax",
         "layers.1.mlp.fc2", "norm", "head", "<model>"],
    ),
    "resmlp": (
        ["--model", "examples.resmlp:build", "--model-args", '{"depth": 3, "width": 16}',
         "--input", "16x16:float32", "--loss", "mse"],
        ["blocks.0.bn1", "blocks.0.fc1", "blocks.0", "blocks.2.fc2", "head"],
    ),
    "cnn": (
        ["--model", "examples.cnn:build", "--model-args", '{"channels": 4}',
         "--input", "examples.cnn:make_batch", "--loss", "cross_entropy"],
        ["features.0.conv", "features.0.bn", "features.1.conv", "head"],
    ),
}  # fmt: skip
NAIVE_FLOAT16 = '{"depth": 1, "width": 16, "heads": 2, "softmax": "%s", "softmax_dtype": "float16", "logit_scale": 32}'  # noqa: E501


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def probe(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    """Run ``stability probe ... --json``; the exit code and the parsed document."""
    capsys.readouterr()
    out = ["--db", str(tmp_path / "s.db"), "--out", str(tmp_path / "probe.csv"), "--json"]
    code = main(["probe", *args, *out])
    captured = capsys.readouterr()
    return code, json.loads(captured.out)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_example_is_probed_from_the_cli(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, expected = EXAMPLES[name]
    code, doc = probe(tmp_path, capsys, *args)
    assert code == 0, doc
    assert doc["schema"] == "stability-probe/1"
    names = [r["module"] for r in doc["rows"]]
    assert set(expected) <= set(names), names
    assert [r["order"] for r in doc["rows"]] == list(range(1, len(names) + 1))
    for r in doc["rows"]:
        assert r["fwd_var"] > 0 and r["fwd_f16_headroom"] > 0, r
        assert r["verdict"] in ("stable", "vanishes", "explodes", "float16-underflow"), r
    stored = Store.open(tmp_path / "s.db").records("probe")
    assert list(stored["module"]) == names and set(stored["model"]) == {args[1]}
    assert list(pd.read_csv(tmp_path / "probe.csv")["module"]) == names
    on_disk = json.loads((tmp_path / "probe.json").read_text())
    assert [r["module"] for r in on_disk["rows"]] == names
    assert doc["summary"]["modules"] == len(names)


def test_naive_float16_softmax_fails_on_non_finite_and_names_the_softmax(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Logits 32x the usual scale (max ~40) pass log(65504) ~ 11.09: exp overflows in
    float16 without the max subtracted; the first inf/NaN is the softmax's output, and
    --fail-on exits 1."""
    common = ["--model", "examples.transformer:build", "--input",
              "examples.transformer:make_batch", "--fail-on", "non-finite"]  # fmt: skip
    code, doc = probe(tmp_path, capsys, *common, "--model-args", NAIVE_FLOAT16 % "naive")
    assert code == 1
    assert doc["summary"]["first_nonfinite"] == {
        "module": "layers.0.attn.softmax",
        "phase": "forward",
    }
    assert doc["fail_on"]["flagged_modules"] >= 1
    # The witness: the same network with the max subtracted stays finite.
    code, doc = probe(tmp_path, capsys, *common, "--model-args", NAIVE_FLOAT16 % "stable")
    assert code == 0, doc["summary"]
    assert all(r["fwd_nonfinite"] == 0 and r["bwd_nonfinite"] == 0 for r in doc["rows"])


def test_modules_glob_picks_by_qualified_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, _ = EXAMPLES["transformer"]
    code, doc = probe(tmp_path, capsys, *args, "--modules", "layers.*.ln?,<model>")
    assert code == 0
    names = [r["module"] for r in doc["rows"]]
    assert names == ["layers.0.ln1", "layers.0.ln2", "layers.1.ln1", "layers.1.ln2", "<model>"]


def test_stdout_without_json_names_the_verdict_and_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, _ = EXAMPLES["cnn"]
    out = ["--db", str(tmp_path / "s.db"), "--out", str(tmp_path / "p.csv")]
    assert main(["probe", *args, *out]) == 0
    text = capsys.readouterr().out
    assert text.startswith("verdict: ")
    assert "least float16 headroom, forward:" in text and str(tmp_path / "p.json") in text


def _data(tmp_path: Path, records: dict[str, pd.DataFrame]) -> ReportData:
    empty = pd.DataFrame()
    return ReportData(tmp_path / "none.db", tmp_path, empty, empty, empty, empty, None,
                      records=records)  # fmt: skip


def test_report_section_draws_the_newest_probe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, expected = EXAMPLES["resmlp"]
    probe(tmp_path, capsys, *args)
    records = {"probe": Store.open(tmp_path / "s.db").records("probe")}
    section = your_model(_data(tmp_path, records))
    assert section.status == "complete" and section.health in ("pass", "warn")
    assert len(section.figures) == 1 and section.figures[0].uri.startswith("data:image/svg")
    table = section.tables[0].frame
    assert set(expected) <= set(table["module"])
    assert "examples.resmlp:build" in section.notes[0]


def test_report_section_without_a_probe_says_how_to_run_one(tmp_path: Path) -> None:
    section = your_model(_data(tmp_path, {}))
    assert section.status == "not run" and section.notes == [NOT_RUN]
    assert "stability probe --model" in NOT_RUN
