"""``stability doctor --model`` on the examples, from the command line, and its bad input.

The examples are imported from the repository root (the working directory here), as a
user's package is from theirs. Sizes are small (width 16, batches of 4 to 16, a handful of
steps), so each run is a second or two on a loaded machine.
"""

from pathlib import Path

import pandas as pd
import pytest
from doctor_run import assert_refused, at_repo_root, doctor  # noqa: F401 (at_repo_root: autouse, applies here)

from stability.results.store import Store

RESMLP = ["--model", "examples.resmlp:build", "--model-args", '{"depth": 3, "width": 16}',
          "--input", "16x16:float32", "--loss", "mse"]  # fmt: skip
CNN = ["--model", "examples.cnn:build", "--model-args", '{"channels": 4}',
       "--input", "examples.cnn:make_batch", "--loss", "cross_entropy"]  # fmt: skip
NAIVE_TRANSFORMER = [
    "--model", "examples.transformer:build", "--model-args",
    '{"depth": 1, "width": 16, "heads": 2, "softmax": "naive", "softmax_dtype": "float16", '
    '"logit_scale": 32}',
    "--input", "examples.transformer:make_batch", "--loss", "cross_entropy",
]  # fmt: skip


def test_naive_float16_softmax_is_named_with_its_operator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = doctor(tmp_path, capsys, *NAIVE_TRANSFORMER, "--steps", "3",
                       "--fail-on-divergence")  # fmt: skip
    assert code == 1 and doc["exit_code"] == 1
    d = doc["diagnosis"]
    assert (d["status"], d["step"], d["module"], d["phase"]) == (
        "diverged",
        0,
        "layers.0.attn.softmax",
        "forward",
    )
    assert (d["op"], d["mechanism"]) == ("exp", "overflow")  # exp(s) > 65504 for s > 11.09
    stored = Store.open(tmp_path / "s.db").records("doctor_model")
    assert stored["module"].tolist() == ["layers.0.attn.softmax"]


def test_too_large_lr_is_found_and_searched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = doctor(tmp_path, capsys, *RESMLP, "--lr", "50", "--steps", "20",
                       "--lr-search", "--trial-steps", "8")  # fmt: skip
    assert code == 0
    d = doc["diagnosis"]
    assert d["status"] == "diverged" and d["module"] is not None and d["step"] >= 1
    search = pd.read_csv(tmp_path / "doctor-lr-search.csv").iloc[0]
    # The search brackets the edge below the lr that diverged: stable < divergent <= 50.
    assert 0 < search["largest_stable_lr"] < search["smallest_divergent_lr"] <= 50
    layers = pd.read_csv(tmp_path / "doctor-layers.csv")
    assert {"blocks.0.fc1", "head"} <= set(layers["module"])


def test_stable_cnn_in_float16_with_loss_scaling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = doctor(tmp_path, capsys, *CNN, "--steps", "3", "--dtype", "float16",
                       "--loss-scaling")  # fmt: skip
    assert code == 0 and doc["diagnosis"]["status"] == "stable"
    scaling = pd.read_csv(tmp_path / "doctor-loss-scaling.csv")
    assert set(scaling["loss_scaling"]) == {False, True}
    assert {"features.0.conv", "head"} <= set(scaling["module"])
    assert scaling["zero_grad_fraction"].between(0, 1).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "examples.nope:build", "--input", "4x4:float32"], "--model"),
        ([*RESMLP[:4], "--input", "16x7:float32"], "does not fit"),
        ([*RESMLP, "--lr-map"], "--lr-map works on the built-in MLP only"),
        ([*RESMLP, "--loss-scaling"], "--loss-scaling needs a reduced dtype"),
        ([*RESMLP, "--dtype", "float64"], "dtype"),
        ([*RESMLP, "--lr", "nan"], "learning rate must be finite and > 0, got nan"),
        ([*RESMLP, "--lr", "0"], "learning rate must be finite and > 0, got 0.0"),
        ([*RESMLP, "--steps", "0"], "steps must be an integer >= 1, got 0"),
    ],
)
def test_bad_input_is_one_line_and_leaves_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert_refused(tmp_path, capsys, args, message)
    assert not (tmp_path / "d.csv").exists()
