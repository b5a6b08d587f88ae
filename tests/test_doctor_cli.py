"""``stability doctor`` end to end on tiny configs: verdicts, tables, store, bad input."""

from pathlib import Path

import pandas as pd
import pytest
import torch

from stability.cli import main
from stability.results.store import Store
from stability.train.doctor import INF, NAN

TINY = ["--depth", "2", "--width", "8", "--batch", "8", "--steps", "5"]


def run(tmp_path: Path, *args: str) -> int:
    out = tmp_path / "r" / "doctor.csv"
    return main(["doctor", *TINY, "--out", str(out), "--db", str(tmp_path / "r" / "s.db"), *args])


def test_stable_run_says_stable_and_writes_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "--lr", "0.01") == 0
    printed = capsys.readouterr().out
    assert "stable: 5 steps, all values finite" in printed
    verdict = pd.read_csv(tmp_path / "r" / "doctor.csv")
    assert verdict.loc[0, "status"] == "stable"
    with Store.open(tmp_path / "r" / "s.db") as store:
        assert store.doctor_rows("diagnosis")["status"].tolist() == ["stable"]
        assert store.runs()["kind"].tolist() == ["doctor"]


def test_large_lr_names_step_layer_phase_and_cause(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "--lr", "1e6", "--depth", "3") == 0
    printed = capsys.readouterr().out
    assert "first non-finite value: step" in printed
    verdict = pd.read_csv(tmp_path / "r" / "doctor.csv").iloc[0]
    assert verdict["status"] == "diverged"
    assert verdict["phase"] in ("forward", "backward", "update")
    assert verdict["kind"] in (INF, NAN)
    layers = pd.read_csv(tmp_path / "r" / "doctor-layers.csv")
    assert layers["where"].tolist() == ["layer 1", "layer 2", "layer 3", "head"]


def test_half_precision_gelu_blow_up_is_a_nan_from_an_inf(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--activation", "gelu", "--init", "standard_normal", "--dtype", "float16"]
    assert run(tmp_path, *args, "--depth", "8", "--width", "32") == 0
    verdict = pd.read_csv(tmp_path / "r" / "doctor.csv").iloc[0]
    assert (verdict["kind"], verdict["phase"], verdict["step"]) == (NAN, "forward", 0)
    assert "overflow" in verdict["first_inf"]  # the rounding to float16 overflowed first
    assert "before it, the first inf" in capsys.readouterr().out


def test_lr_search_map_cost_and_loss_scaling_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = [
        "--dtype", "float16", "--lr-search", "--lr-map", "--lrs", "0.01,1000",
        "--map-inits", "kaiming_normal", "--map-activations", "relu", "--trial-steps", "4",
        "--loss-scaling", "--cost", "--figure", str(tmp_path / "r" / "map.png"),
    ]  # fmt: skip
    assert run(tmp_path, *extra) == 0
    printed = capsys.readouterr().out
    assert "largest stable lr" in printed and "doctor / detect_anomaly" in printed
    lr_map = pd.read_csv(tmp_path / "r" / "doctor-lr-map.csv")
    assert lr_map.set_index("lr")["stable"].to_dict() == {0.01: True, 1000.0: False}
    search = pd.read_csv(tmp_path / "r" / "doctor-lr-search.csv").iloc[0]
    assert 0.01 <= search["largest_stable_lr"] < search["smallest_divergent_lr"] <= 1000
    scaling = pd.read_csv(tmp_path / "r" / "doctor-loss-scaling.csv")
    assert set(scaling["loss_scaling"]) == {False, True}
    assert (tmp_path / "r" / "map.png").stat().st_size > 0
    with Store.open(tmp_path / "r" / "s.db") as store:
        for kind in ("diagnosis", "layers", "cost", "lr_search", "lr_map", "loss_scaling"):
            assert not store.doctor_rows(kind).empty, kind


def _foreign_db(tmp_path: Path) -> Path:
    path = tmp_path / "foreign.db"
    path.write_bytes(b"not a database at all, just text")
    return path


BAD_INPUT = [
    pytest.param(["--activation", "relux"], "unknown activation 'relux'", id="activation"),
    pytest.param(["--init", "kaiming"], "unknown init 'kaiming'", id="init"),
    pytest.param(["--dtype", "float9"], "unknown dtype 'float9'", id="dtype"),
    pytest.param(["--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'", id="optimizer"),
    pytest.param(["--data", "mnist"], "unknown data set 'mnist'", id="data"),
    pytest.param(["--lr", "-1"], "learning rate must be finite and > 0", id="lr-negative"),
    pytest.param(["--lr", "nan"], "learning rate must be finite and > 0", id="lr-nan"),
    pytest.param(["--lr", "fast"], "invalid float value", id="lr-text"),
    pytest.param(["--steps", "0"], "steps must be an integer >= 1", id="steps-zero"),
    pytest.param(["--depth", "0"], "depth must be >= 1", id="depth-zero"),
    pytest.param(["--loss-scaling"], "--loss-scaling needs a reduced dtype", id="scaling-fp32"),
    pytest.param(["--lr-map", "--lrs", "0.1,x"], "'x' is not a number", id="lrs-text"),
    pytest.param(["--lr-map", "--lrs", "0,1"], "--lrs values must be finite", id="lrs-zero"),
    pytest.param(["--lr-map", "--map-inits", "bad"], "unknown init 'bad'", id="map-init"),
    pytest.param(["--trial-steps", "0"], "trial-steps must be >= 1", id="trial-steps"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert run(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("stability: error:")
    assert message in err
    assert not (tmp_path / "r" / "doctor.csv").exists()


def test_bad_paths_exit_2_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "adir").mkdir()
    assert main(["doctor", *TINY, "--out", str(tmp_path / "adir")]) == 2
    assert "is a directory" in capsys.readouterr().err
    db = _foreign_db(tmp_path)
    assert main(["doctor", *TINY, "--out", str(tmp_path / "o.csv"), "--db", str(db)]) == 2
    assert "not an SQLite file" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_a_gpu_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, "--device", "cuda") == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_fail_on_divergence_exits_1_after_writing_every_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "--lr", "1e6", "--depth", "3", "--fail-on-divergence") == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("fail-on-divergence: the run diverged at step ")
    assert "first non-finite value: step" in captured.out
    assert pd.read_csv(tmp_path / "r" / "doctor.csv").loc[0, "status"] == "diverged"
    assert (tmp_path / "r" / "doctor-layers.csv").exists()
    with Store.open(tmp_path / "r" / "s.db") as store:
        assert store.doctor_rows("diagnosis")["status"].tolist() == ["diverged"]


def test_fail_on_divergence_stable_run_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "--lr", "0.01", "--fail-on-divergence") == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "stable: 5 steps" in captured.out
