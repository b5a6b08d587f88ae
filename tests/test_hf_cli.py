"""probe, doctor, baseline and gate on real Hugging Face architectures (tiny configs built in
code, ``examples/hf_tiny.py``: no download), from the command line as a user runs them.

The models are imported from the repository root (the working directory here); the planted
change is ``tests/hf_plant.py``: one weight scaled by 1.01 between baseline and gate, which
the gate must trace to its module before the figures that follow from it.
"""

import json
from pathlib import Path
from typing import Any

import pytest

from stability.cli import main

REPO = Path(__file__).resolve().parents[1]
BATCHES = {"gpt2": "gpt2_batch", "llama": "llama_batch", "bert": "bert_batch",
           "t5": "t5_batch", "vit": "vit_batch", "resnet": "resnet_batch"}  # fmt: skip
ARCHS = sorted(BATCHES)
PLANTED = {
    "gpt2": "transformer.h.1.mlp.c_fc",
    "llama": "model.layers.1.mlp.gate_proj",
    "bert": "bert.encoder.layer.1.intermediate.dense",
    "t5": "encoder.block.1.layer.1.DenseReluDense.wi",
    "vit": "vit.layers.1.mlp.fc1",
    "resnet": "resnet.encoder.stages.1.layers.0.layer.0.convolution",
}


def tiny(arch: str, factory: str = "examples.hf_tiny:build") -> list[str]:
    return ["--model", factory, "--model-args", json.dumps({"arch": arch}),
            "--input", f"examples.hf_tiny:{BATCHES[arch]}"]  # fmt: skip


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str,
        *args: str) -> tuple[int, Any]:  # fmt: skip
    """``stability <command> ... --json``: the exit code and the document."""
    capsys.readouterr()
    out = ["--db", str(tmp_path / "s.db"), "--out", str(tmp_path / f"{command}.csv"), "--json"]
    code = main([command, *args, *out])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("arch", ARCHS)
def test_probe_each_architecture_with_its_own_loss(
    arch: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = run(tmp_path, capsys, "probe", *tiny(arch), "--loss", "model")
    assert code == 0
    assert doc["mode"] == "eval" and doc["objective"].startswith("the model's own loss")
    rows = doc["rows"]
    assert len(rows) > 10 and PLANTED[arch] in {r["module"] for r in rows}
    assert all(r["mode"] == "eval" for r in rows)
    assert [r["order"] for r in rows] == sorted(r["order"] for r in rows)
    # The loss reaches the middle of the network: the planted module has gradients.
    planted = next(r for r in rows if r["module"] == PLANTED[arch])
    assert planted["bwd_var"] > 0 and planted["param_grad_var"] > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_doctor_trains_each_architecture_on_a_bounded_objective(
    arch: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = run(tmp_path, capsys, "doctor", *tiny(arch), "--steps", "3")
    assert code == 0
    d = doc["diagnosis"]
    assert d["status"] == "stable" and d["mode"] == "eval" and d["optimizer"] == "sgd"
    assert d["objective"] == "the model's own loss (its labels; chosen: no --loss)"
    assert 0 < d["last_loss"] < 10  # cross-entropies over 10 or 128 classes: bounded


@pytest.mark.parametrize("arch", ARCHS)
def test_gate_names_the_planted_module_first(
    arch: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = tiny(arch, "tests.hf_plant:build")
    base = str(tmp_path / "b.json")
    assert main(["baseline", "--reason", "t", *flags, "--out", base]) == 0
    assert main(["gate", *flags, "--baseline", base]) == 0
    monkeypatch.setenv("HF_PLANT_FACTOR", "1.01")
    capsys.readouterr()
    assert main(["gate", *flags, "--baseline", base]) == 1
    lines = capsys.readouterr().err.splitlines()
    first = next(line for line in lines if line.startswith("REGRESSION"))
    assert first.startswith(f"REGRESSION {PLANTED[arch]} fwd_")
    follows = [line for line in lines if f"follows from {PLANTED[arch]}:" in line]
    assert len(follows) == 2 and "forward" in follows[0] and "backward" in follows[1]


def test_gate_compares_flags_by_meaning_and_judges_an_old_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "b.json"
    flags = ["--model", "examples.hf_tiny:build", "--input", "examples.hf_tiny:gpt2_batch"]
    spaced = [*flags, "--model-args", '{"arch": "gpt2", "seed": 0}']
    tight = [*flags, "--model-args", '{"seed":0,"arch":"gpt2"}']
    assert main(["baseline", "--reason", "t", *spaced, "--out", str(base)]) == 0
    assert main(["gate", *tight, "--baseline", str(base)]) == 0
    # A baseline from before --mode: raw flags, no mode; the model was probed as built.
    doc = json.loads(base.read_text())
    doc["model"] = {k: v for k, v in doc["model"].items() if k != "mode"}
    doc["model"]["model_args"] = '{"arch": "gpt2",  "seed": 0}'
    assert main(["baseline", "--reason", "t", *spaced, "--mode", "train", "--out",
                 str(tmp_path / "train.json")]) == 0  # fmt: skip
    doc["modules"] = json.loads((tmp_path / "train.json").read_text())["modules"]
    base.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["gate", *tight, "--baseline", str(base)]) == 0
    assert "predates --mode" in capsys.readouterr().err
    assert main(["gate", *tight, "--mode", "eval", "--baseline", str(base)]) == 1  # dropout


def test_named_specs_take_the_vocabulary_and_labels_can_come_from_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gpt2 = ["--model", "examples.hf_tiny:build", "--model-args", '{"arch": "gpt2"}']
    named = ["--input", "input_ids=2x12:int64,attention_mask=2x12:int64:2"]
    code, doc = run(tmp_path, capsys, "probe", *gpt2, *named)
    assert code == 0 and doc["objective"].startswith("a fixed random projection")
    code, own = run(tmp_path, capsys, "probe", *gpt2, *named, "--loss", "model",
                    "--target", "2x12:int64")  # fmt: skip
    assert code == 0 and "--target passed as labels" in own["objective"]
    code, ce = run(tmp_path, capsys, "probe", *tiny("gpt2"), "--loss", "cross_entropy")
    assert code == 0 and "against the batch's labels (2, 12)" in ce["objective"]
    # Without labels the doctor trains cross_entropy on the logits (token ids in the batch).
    code, doc = run(tmp_path, capsys, "doctor", *gpt2, *named, "--steps", "2",
                    "--optimizer", "adamw", "--weight-decay", "0.01", "--lr", "1e-3")  # fmt: skip
    d = doc["diagnosis"]
    assert code == 0 and d["objective"].startswith("cross_entropy of the output (2, 12, 128)")
    assert (d["optimizer"], d["weight_decay"], d["status"]) == ("adamw", 0.01, "stable")


@pytest.mark.parametrize(
    ("arch", "spec", "length"),
    [("t5", "input_ids=2x12:int64", 4), ("whisper", "input_features=2x16x32", 4)],
)
def test_encoder_decoders_get_decoder_ids_from_a_spec(
    arch: str, spec: str, length: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--model", "examples.hf_tiny:build", "--model-args", json.dumps({"arch": arch}),
            "--input", spec]  # fmt: skip
    code, doc = run(tmp_path, capsys, "probe", *args, "--loss", "cross_entropy")
    assert code == 0
    (note,) = doc["batch_notes"]
    assert note.startswith(f"decoder_input_ids 2x{length} made") and "vocab_size 128" in note
    assert f"output (2, {length}, 128)" in doc["objective"]


def test_eval_is_the_default_and_repeats_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--model", "tests.hf_plant:build", "--model-args", '{"arch": "bert", "dropout": 0.5}',
            "--input", "examples.hf_tiny:bert_batch"]  # fmt: skip
    figures = []
    for mode in ([], [], ["--mode", "train"]):
        code, doc = run(tmp_path, capsys, "probe", *args, *mode, "--seed", "1")
        assert code == 0
        figures.append([(r["fwd_var"], r["bwd_var"]) for r in doc["rows"]])
    assert figures[0] == figures[1]
    assert figures[2] != figures[0]  # dropout at 0.5 moves them: the mode is real


def test_dropped_doctor_flags_and_a_missing_loss_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (["doctor", *tiny("gpt2"), "--depth", "4"], "--depth works on the built-in MLP only"),
        (["doctor", *tiny("gpt2"), "--data", "regression"], "--data works on the built-in"),
        (["doctor", "--momentum", "0.5"], "--momentum works with --model only"),
        (["doctor", *tiny("gpt2"), "--optimizer", "adam", "--momentum", "0.5"],
         "--momentum is for sgd"),
        (["probe", "--model", "examples.hf_tiny:build", "--model-args", '{"arch": "vit"}',
          "--input", "pixel_values=2x3x32x32", "--loss", "model"], "returned no loss"),
        (["probe", *tiny("vit"), "--loss", "mse", "--target", "2:float32"],
         "(2, 10)"),
    ]  # fmt: skip
    for args, words in cases:
        capsys.readouterr()
        code = main([*args, "--db", str(tmp_path / "s.db"), "--out", str(tmp_path / "x.csv")])
        errors = [e for e in capsys.readouterr().err.splitlines() if e.startswith("stability")]
        assert code == 2 and len(errors) == 1 and words in errors[0], (args, errors)
    assert not (tmp_path / "s.db").exists()
