"""The per-module probe on hand-made networks whose statistics are known exactly, and the
verdicts on rows made to show each one."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from stability.errors import StabilityError
from stability.usermodel.findings import FLUSH_LIMIT, PROBE_VERDICTS, finding_lines, judge, summary
from stability.usermodel.probe import default_modules, probe_modules, select_modules
from stability.usermodel.spec import load_loss, load_setup


class Scale(nn.Module):
    """Multiplies by a constant and returns a tuple, as some blocks do."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * self.factor, x * 0


class Net(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4, bias=False)
        nn.init.eye_(self.fc.weight)
        self.scale = Scale(factor)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.scale(self.act(self.fc(x)) + self.fc(x))  # fc is called twice
        return y


def run(net: nn.Module, x: torch.Tensor, patterns: list[str] | None = None) -> list[dict]:  # type: ignore[type-arg]
    return probe_modules(net, lambda: net(x), lambda out: out.sum(), patterns)


def test_rows_are_named_ordered_and_pool_every_call_and_tensor() -> None:
    x = torch.tensor([[1.0, -2.0, 3.0, -4.0]] * 2)
    rows = {r["module"]: r for r in run(Net(2.0), x)}
    assert list(rows) == ["fc", "scale", "<model>"]  # the ReLU (torch, no parameters) is not
    # fc ran twice on the same x: pooled values are x twice, variance that of x.
    assert rows["fc"]["elements"] == 16
    assert rows["fc"]["fwd_var"] == pytest.approx(float(x.var(correction=0)))
    # scale's output is a tuple: (2 * (relu(x) + x), 0); 16 values, half of them 0.
    y = 2 * (x.relu() + x)
    pooled = torch.cat([y.reshape(-1), torch.zeros(8)])
    assert rows["scale"]["fwd_var"] == pytest.approx(float(pooled.var(correction=0)))
    assert rows["scale"]["fwd_max_abs"] == 12.0
    # Headroom: log2(65504 / 12) binades in float16; bfloat16's max is float32's, about 2^128.
    assert rows["scale"]["fwd_f16_headroom"] == pytest.approx(math.log2(65504 / 12))
    assert rows["scale"]["fwd_bf16_headroom"] == pytest.approx(math.log2(3.3895e38 / 12), abs=1e-3)
    # The loss is out.sum(): the gradient entering the model's output is exactly 1.
    assert rows["<model>"]["bwd_var"] == 0.0 and rows["<model>"]["bwd_max_abs"] == 1.0


def test_subnormal_and_flush_fractions_count_what_float16_would_lose() -> None:
    # float16: smallest normal 2^-14, smallest subnormal 2^-24 (below half of it: 0).
    values = torch.tensor([[1.0, 2.0**-16, 2.0**-26, 2.0**-30]])
    net = nn.Sequential(nn.Identity())
    rows = probe_modules(net, lambda: net(values), lambda o: o.sum(), ["0"])
    (row,) = rows
    assert row["fwd_f16_subnormal"] == 0.25 and row["fwd_f16_flush"] == 0.5
    assert row["fwd_bf16_subnormal"] == 0.0 and row["fwd_bf16_flush"] == 0.0


def test_overflow_past_float16_has_negative_headroom_and_its_verdict() -> None:
    x = torch.full((2, 4), 1e5)
    rows = judge(run(Net(1.0), x))
    assert rows[0]["fwd_f16_headroom"] < 0
    assert rows[0]["verdict"] == "float16-overflow" and "65504" in rows[0]["reason"]


def test_default_and_glob_selection() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Sequential(nn.LayerNorm(2)))
    assert default_modules(net) == ["0", "2.0"]  # no containers, no bare ReLU
    assert select_modules(net, ["1", "<model>"]) == ["", "1"]
    with pytest.raises(StabilityError, match="--modules nope matches no module"):
        select_modules(net, ["nope"])


def _row(**over: object) -> dict:  # type: ignore[type-arg]
    base = {"order": 1, "module": "m", "kind": "Linear", "role": "layer", "leaf": True,
            "reshapes": False, "stack": "", "block_index": -1, "fwd_var": 1.0, "fwd_ms": 1.0,
            "in_ms": 1.0, "bias_ms": 0.0, "expected_ms": math.nan, "norm_eps": math.nan,
            "small_scale": "", "bwd_var": 1.0, "bwd_sq_norm": 1.0, "in_bwd_sq_norm": 1.0,
            "fwd_nonfinite": 0, "bwd_nonfinite": 0, "fwd_min": -1.0, "fwd_max_abs": 1.0,
            "bwd_max_abs": 1.0, "fwd_f16_headroom": 10.0, "bwd_f16_headroom": 10.0,
            "fwd_f16_flush": 0.0, "bwd_f16_flush": 0.0, "fwd_f16_flush_energy": 0.0,
            "bwd_f16_flush_energy": 0.0, "param_grad_f16_flush": 0.0,
            "param_grad_f16_flush_energy": 0.0}  # fmt: skip
    return {**base, **over}


@pytest.mark.parametrize(
    ("second", "verdict"),
    [
        ({}, "stable"),
        ({"fwd_ms": 1e3}, "explodes"),  # a layer's gain: 10^3 > 10^BAND
        ({"fwd_ms": 1e-3}, "stable"),  # a small gain is a residual branch's right
        ({"fwd_ms": 1e3, "leaf": False}, "stable"),  # a composite: judged by its parts
        ({"fwd_ms": 1e3, "bias_ms": 999.5}, "stable"),  # its own bias, not its gain
        ({"fwd_ms": 1e3, "role": "parameter-free"}, "stable"),
        ({"fwd_ms": 1e-9, "role": "frozen", "bwd_sq_norm": 0.0}, "stable"),
        ({"role": "norm", "expected_ms": 1.0, "fwd_ms": 0.9}, "stable"),
        (
            {"role": "norm", "expected_ms": 1.0, "fwd_ms": 1e-3, "in_ms": 1e-8, "norm_eps": 1e-5},
            "vanishes",
        ),
        ({"fwd_nonfinite": 3}, "non-finite"),
        ({"bwd_f16_headroom": -1.0, "bwd_max_abs": 1.3e5}, "float16-overflow"),
        ({"bwd_f16_flush": 0.5, "bwd_f16_flush_energy": 2 * FLUSH_LIMIT}, "float16-underflow"),
        ({"bwd_f16_flush": 0.05, "bwd_f16_flush_energy": 1e-6}, "stable"),  # a tail near 0
    ],
)
def test_each_verdict(second: dict, verdict: str) -> None:  # type: ignore[type-arg]
    """The middle of three modules, judged by what it does itself."""
    rows = [_row(), _row(order=2, module="n", **second), _row(order=3, module="top")]
    middle = judge(rows)[1]
    assert middle["verdict"] == verdict, middle
    assert verdict in PROBE_VERDICTS


def _stack(fwd: list[float], bwd: list[float]) -> list[dict]:  # type: ignore[type-arg]
    """Blocks of one stack: each one's output mean square and the gradient norm^2 at its
    input (the block above's output gradient is the next one's)."""
    rows = []
    for i, (ms, g) in enumerate(zip(fwd, bwd, strict=True)):
        above = bwd[i + 1] if i + 1 < len(bwd) else 1.0
        rows.append(_row(order=i + 1, module=f"h.{i}", role="block", leaf=False, stack="h",
                         block_index=i, in_ms=1.0 if i == 0 else fwd[i - 1], fwd_ms=ms,
                         in_bwd_sq_norm=g, bwd_sq_norm=above))  # fmt: skip
    return rows


def test_the_stream_names_the_block_where_it_leaves_the_band() -> None:
    rows = judge(_stack([2.0, 3.0, 3e3, 3e3], [1.0, 1.0, 1.0, 1.0]))
    assert [r["verdict"] for r in rows] == ["stable", "stable", "explodes", "stable"]
    assert "10^+3.0 its input's" in rows[2]["reason"]
    assert summary(rows)["origin"]["module"] == "h.2"


def test_the_gradient_is_blamed_where_the_backward_pass_first_leaves_the_band() -> None:
    # From the top (h.3) down: the gradient norm^2 jumps 10^3 across h.2, then stays.
    rows = judge(_stack([1.0] * 4, [1e3, 1e3, 1e3, 1.0]))
    assert [r["verdict"] for r in rows] == ["stable", "stable", "explodes", "stable"]
    assert "gradient" in rows[2]["reason"] and rows[2]["side"] == "backward"


def test_a_transition_block_is_judged_by_the_stream_only() -> None:
    rows = _stack([1.0, 0.03, 0.03], [1.0, 1.0, 1.0])
    rows[1]["reshapes"] = True  # a downsampling stage: 10^-1.5 is its projection's init
    assert [r["verdict"] for r in judge(rows)] == ["stable"] * 3
    rows[1]["reshapes"] = False  # the witness: the same drop inside a residual stack
    assert judge(rows)[1]["verdict"] == "vanishes"


def test_summary_names_the_first_non_finite_module_and_lines_read() -> None:
    rows = judge([_row(), _row(order=2, module="softmax", fwd_nonfinite=5),
                  _row(order=3, module="after", fwd_nonfinite=9, bwd_nonfinite=9)])  # fmt: skip
    s = summary(rows)
    assert s["verdict"] == "non-finite" and s["counts"] == {"non-finite": 2, "stable": 1}
    assert s["first_nonfinite"] == {"module": "softmax", "phase": "forward"}
    lines = finding_lines(rows)
    assert lines[0].startswith("verdict: non-finite") and "first inf/NaN: softmax" in lines[2]
    assert any(line.startswith("starts at: softmax") for line in lines)


def test_cross_entropy_takes_classes_on_the_last_dimension() -> None:
    logits = torch.randn(2, 5, 7)
    target = torch.randint(0, 7, (2, 5))
    flat = nn.functional.cross_entropy(logits.reshape(-1, 7), target.reshape(-1))
    assert torch.equal(load_loss("cross_entropy")(logits, target), flat)


def test_the_loader_check_leaves_batchnorm_statistics_as_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "umod_bn.py").write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))\n"
    )
    monkeypatch.chdir(tmp_path)
    setup = load_setup("umod_bn:build", None, "8x3:float32", mode="train")
    bn = setup.model[1]
    assert torch.equal(bn.running_mean, torch.zeros(3)) and int(bn.num_batches_tracked) == 0
    setup.forward()  # the witness: a forward in training mode does move them
    assert not torch.equal(bn.running_mean, torch.zeros(3))
