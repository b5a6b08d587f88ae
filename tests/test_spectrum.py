"""The Jacobian spectrum, bias_var and the criticality subcommand."""

import contextlib
import io
import json
import math

import pytest
import torch

from stability.cli import main
from stability.core.config import MLPConfig
from stability.core.jacobian import factors, lanczos, spectrum
from stability.core.model import build_mlp, input_batch
from stability.core.scaled import scaled_mlp
from stability.errors import StabilityError
from stability.sweep.cells import Cell


def test_zero_bias_var_leaves_keys_and_rows_as_they_were() -> None:
    config = MLPConfig(depth=3, width=8)
    assert "bias_var" not in config.as_dict()
    key = Cell(config, 4).key
    assert key == (
        '{"activation": "relu", "batch": 4, "bias": true, "depth": 3, "device": "cpu", '
        '"dtype": "float32", "init": "kaiming_normal", "seed": 0, "width": 8}'
    )
    assert Cell(MLPConfig(depth=3, width=8, bias_var=0.5), 4).key != key


def test_bias_var_draws_biases_and_keeps_the_weights() -> None:
    plain = build_mlp(MLPConfig(depth=4, width=512))
    biased = build_mlp(MLPConfig(depth=4, width=512, bias_var=0.25))
    for a, b in zip(plain.layers, biased.layers, strict=True):
        assert torch.equal(a.linear.weight, b.linear.weight)
        assert b.linear.bias is not None
        # 512 draws of N(0, 0.25): the sample variance has sd 0.25 * sqrt(2/511) = 0.016
        assert abs(float(b.linear.bias.detach().var()) - 0.25) < 5 * 0.016


@pytest.mark.parametrize("value", [-0.1, math.inf, math.nan, "x", True])
def test_bad_bias_var_is_one_line(value: object) -> None:
    with pytest.raises(StabilityError, match="bias_var"):
        MLPConfig(bias_var=value)  # type: ignore[arg-type]


def test_bias_var_needs_biases() -> None:
    with pytest.raises(StabilityError, match="needs bias=True"):
        MLPConfig(bias=False, bias_var=0.1)


def test_lanczos_with_n_steps_finds_the_exact_extremes() -> None:
    """A full Krylov space: the Ritz values are the eigenvalues of J J^T."""
    model = scaled_mlp("tanh", 5, 16, 1.5, 0.1, "gaussian", seed=3)
    x = input_batch(model.config, 3)
    exact = spectrum(model, x, [5], "exact")[0]
    theta, tau = lanczos(factors(model, x), 5, steps=16)
    s = torch.linalg.svdvals(_product(model, x))
    torch.testing.assert_close(theta.amax(dim=1), s[:, 0] ** 2, rtol=1e-8, atol=0)
    torch.testing.assert_close(tau.sum(dim=1), torch.ones(3, dtype=torch.float64))
    assert exact.jj_mean == pytest.approx(float((s**2).mean()), rel=1e-10)


def _product(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """J from autograd, one input at a time: the reference for the explicit product."""
    double = model.double()
    return torch.stack([torch.autograd.functional.jacobian(double, xi.double()) for xi in x])


def test_spectrum_rows_say_what_they_measured() -> None:
    model = scaled_mlp("identity", 3, 8, 1.0, 0.0, "orthogonal", seed=0)
    rows = spectrum(model, input_batch(model.config, 2), [1, 3])
    assert [r.depth for r in rows] == [1, 3]
    for r in rows:  # orthogonal linear layers: every singular value is 1 (to float32)
        assert r.method == "exact" and r.within_10 == 1.0
        assert r.jj_mean == pytest.approx(1.0) and abs(r.log10_condition) < 1e-6  # float32 W


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["exact", "lanczos"])
def test_spectrum_on_cuda_matches_cpu(method: str) -> None:
    """device='cuda' from a CPU model: float64 on both, so only summation order differs."""
    model = scaled_mlp("tanh", 4, 32, 1.2, 0.05, "gaussian", seed=1)
    x = input_batch(model.config, 4)
    cpu = spectrum(model, x, [2, 4], method)  # type: ignore[arg-type]
    gpu = spectrum(model, x, [2, 4], method, device="cuda")  # type: ignore[arg-type]
    for a, b in zip(cpu, gpu, strict=True):
        assert b.jj_mean == pytest.approx(a.jj_mean, rel=1e-9)
        assert b.jj_var == pytest.approx(a.jj_var, rel=1e-9)
        assert b.q50 == pytest.approx(a.q50, rel=1e-9)
    assert next(model.parameters()).device.type == "cpu"  # the model was not moved


def test_spectrum_device_argument_on_cpu_changes_nothing() -> None:
    """The device argument is plumbed: naming the CPU gives the default's numbers."""
    model = scaled_mlp("tanh", 4, 16, 1.2, 0.05, "gaussian", seed=1)
    x = input_batch(model.config, 3)
    for method in ("exact", "lanczos"):
        plain = spectrum(model, x, [4], method)[0]  # type: ignore[arg-type]
        named = spectrum(model, x, [4], method, device="cpu")[0]  # type: ignore[arg-type]
        assert named == plain


def _cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["criticality", *args])
    return code, out.getvalue()


def test_criticality_recommends_an_isometric_tanh_init() -> None:
    code, text = _cli("--activation", "tanh", "--depth", "20", "--json")
    assert code == 0
    rec = json.loads(text)
    assert rec["isometric"] is True
    assert abs(rec["chi_1"] - 1.0) < 1e-6
    assert rec["jj_normalised_var"] <= 1.0
    assert rec["sigma_w2"] > 1.0 and rec["sigma_b2"] >= 0.0


def test_criticality_says_relu_cannot_be_isometric() -> None:
    code, text = _cli("--activation", "relu", "--depth", "10")
    assert code == 0
    assert "sigma_w^2 = 2" in text and "cannot be dynamically isometric" in text


@pytest.mark.parametrize(
    "args",
    [["--activation", "nope"], ["--weights", "uniform"], ["--depth", "0"], ["--budget", "-1"]],
)
def test_criticality_bad_input_exits_2(args: list[str]) -> None:
    assert _cli(*args)[0] == 2


def test_criticality_phase_diagram_for_any_activation() -> None:
    code, text = _cli("--activation", "relu", "--depth", "5", "--phase", "--json")
    assert code == 0
    phase = json.loads(text)["phase_diagram"]
    assert all(abs(w - 2.0) < 1e-6 for _, w in phase["critical_line"])  # relu: sigma_w^2 = 2
    chaotic = [p for p in phase["grid"] if p["sigma_w2"] > 2.0]
    assert chaotic and all(p["phase"] == "chaotic" for p in chaotic)


def test_sweep_rows_with_bias_var_carry_theory_with_bias() -> None:
    """Mean field with sigma_b^2 (q_1 = sigma_w^2 + sigma_b^2); the band, which assumes
    sigma_b^2 = 0, is withheld with its reason."""
    from stability.sweep.cells import run_cell

    rows = run_cell(Cell(MLPConfig(depth=2, width=8, activation="tanh", bias_var=0.1), 4))
    plain = run_cell(Cell(MLPConfig(depth=2, width=8, activation="tanh"), 4))
    assert all(r["bias_var"] == 0.1 for r in rows)
    assert rows[0]["theory_preact_var"] == pytest.approx(plain[0]["theory_preact_var"] + 0.1)
    assert all(math.isfinite(r[f"theory_{c}_var"]) for r in rows for c in ("act", "weight_grad"))
    assert all(math.isnan(r["pred_log10_preact_var_lo"]) for r in rows)
    assert all("sigma_b^2 = 0" in r["theory_caveat"] for r in rows)
    assert "bias_var" not in plain[0] and math.isfinite(plain[0]["theory_preact_var"])
