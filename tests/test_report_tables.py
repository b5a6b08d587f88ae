"""The verdict tables behind the report's first screen, on hand-made sweep rows.

``judged_table`` adds the margin to the band edge, the borderline flag and a reason;
``recommendations`` picks the inits that stay in the band per activation and dtype, with
the weight scale read back from the stored layer-1 prediction; ``offenders`` ranks the rest.
"""

import math

import pandas as pd
import pytest

from stability.results.tables import (
    judged_table,
    offenders,
    recommendations,
    summary_table,
)
from stability.results.verdict_words import BAND

DEPTH = 10


def _config(
    activation: str,
    init: str,
    fwd: float,
    bwd: float,
    sigma_w2: float = 2.0,
    dtype: str = "float32",
    nonfinite_at: int | None = None,
    seeds: int = 2,
) -> list[dict[str, object]]:
    """Rows of one config whose log10 growth is exactly ``fwd`` forward and ``bwd`` backward."""
    rows = []
    for seed in range(seeds):
        for layer in range(1, DEPTH + 1):
            t = (layer - 1) / (DEPTH - 1)
            preact = sigma_w2 * 10 ** (fwd * t)
            grad = 10 ** (bwd * (1 - t))
            rows.append({
                "activation": activation, "init": init, "dtype": dtype,
                "precision_mode": "native", "depth": DEPTH, "width": 64, "batch": 32,
                "seed": seed, "layer": layer, "preact_var": preact, "grad_var": grad,
                "theory_preact_var": preact, "theory_grad_var": grad,
                "nonfinite": 3 if nonfinite_at is not None and layer >= nonfinite_at else 0,
            })  # fmt: skip
    return rows


def _rows(*configs: list[dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame([row for config in configs for row in config])


def test_verdicts_agree_with_the_summary_table() -> None:
    rows = _rows(
        _config("relu", "kaiming_normal", 0.1, -0.2),
        _config("relu", "standard_normal", 25.0, 3.0, sigma_w2=64.0),
        _config("tanh", "normal", -9.0, -1.0, sigma_w2=0.0064),
    )
    judged = judged_table(rows).sort_values("init").reset_index(drop=True)
    summary = summary_table(rows).sort_values("init").reset_index(drop=True)
    assert judged["verdict"].tolist() == summary["verdict"].tolist()
    assert sorted(judged["verdict"]) == ["explodes", "stable", "vanishes"]


@pytest.mark.parametrize(
    ("fwd", "verdict", "borderline", "margin"),
    [
        pytest.param(-1.98, "stable", True, 0.02, id="just-inside"),
        pytest.param(-2.02, "vanishes", True, -0.02, id="just-beyond"),
        pytest.param(-1.7, "stable", False, 0.3, id="clearly-inside"),
        pytest.param(-2.5, "vanishes", False, -0.5, id="clearly-beyond"),
        pytest.param(2.15, "explodes", True, -0.15, id="within-10-percent-above"),
    ],
)
def test_borderline_is_within_ten_percent_of_the_band_edge(
    fwd: float, verdict: str, borderline: bool, margin: float
) -> None:
    judged = judged_table(_rows(_config("tanh", "xavier_normal", fwd, 0.0, sigma_w2=1.0)))
    row = judged.iloc[0]
    assert row["verdict"] == verdict
    assert bool(row["borderline"]) is borderline
    assert row["margin"] == pytest.approx(margin, abs=1e-9)
    assert ("borderline" in row["reason"]) is borderline
    if borderline:
        assert f"{abs(margin):.2f} decades" in row["reason"]


def test_reasons_say_what_failed_and_where() -> None:
    rows = _rows(
        _config("relu", "standard_normal", 1.0, 24.5, sigma_w2=64.0),
        _config("tanh", "normal", -9.25, -1.0, sigma_w2=0.0064),
        _config("gelu", "standard_normal", 3.0, 3.0, nonfinite_at=7),
        _config("relu", "kaiming_normal", 0.12, -0.3),
    )
    judged = judged_table(rows)
    explode = judged[(judged["activation"] == "relu") & (judged["init"] == "standard_normal")]
    assert explode.iloc[0]["reason"] == f"gradient variance grows by 10^24.5 over {DEPTH} layers"
    vanish = judged[judged["activation"] == "tanh"].iloc[0]
    assert vanish["reason"] == f"signal variance falls by 10^9.2 over {DEPTH} layers"
    broken = judged[judged["activation"] == "gelu"].iloc[0]
    assert broken["verdict"] == "non-finite"
    assert broken["reason"] == (
        "non-finite: 24 inf/NaN values (outputs and gradients) in 4 of 10 layers, over 2 seeds"
    )
    stable = judged[judged["init"] == "kaiming_normal"].iloc[0]
    assert stable["reason"] == f"within ±{BAND:g} decades: forward +0.12, backward -0.30"


def test_sigma_w2_is_read_back_from_the_layer_one_prediction() -> None:
    judged = judged_table(
        _rows(
            _config("relu", "kaiming_normal", 0.0, 0.0, sigma_w2=2.0),
            _config("tanh", "xavier_normal", 0.0, 0.0, sigma_w2=1.0),
        )
    )
    assert sorted(judged["sigma_w2"]) == pytest.approx([1.0, 2.0])


def test_recommendation_lists_the_stable_inits_best_first_per_dtype() -> None:
    rows = _rows(
        _config("relu", "kaiming_normal", 0.05, -0.1, sigma_w2=2.0),
        _config("relu", "orthogonal", -1.5, -1.5, sigma_w2=1.0),
        _config("relu", "lecun_normal", -1.99, -0.5, sigma_w2=1.0),  # borderline: listed last
        _config("relu", "standard_normal", 20.0, 20.0, sigma_w2=64.0),
        _config("relu", "kaiming_normal", 0.05, -0.1, dtype="float16"),
        _config(
            "relu", "standard_normal", 3.0, 3.0, sigma_w2=64.0, dtype="float16", nonfinite_at=5
        ),
    )
    recs = recommendations(judged_table(rows)).set_index("dtype")
    f32 = recs.loc["float32"]
    assert f32["best_init"] == "kaiming_normal"
    assert f32["best_sigma_w2"] == pytest.approx(2.0)
    assert f32["also"] == "orthogonal, lecun_normal"
    assert f32["recommended"] == (
        "kaiming_normal (σw² 2); orthogonal (σw² 1); lecun_normal (σw² 1, borderline)"
    )
    assert (f32["stable"], f32["tried"]) == (3, 4)
    f16 = recs.loc["float16"]
    assert f16["best_init"] == "kaiming_normal" and (f16["stable"], f16["tried"]) == (1, 2)


def test_recommendation_without_a_stable_init_names_the_closest() -> None:
    rows = _rows(
        _config("sigmoid", "xavier_normal", -0.2, -6.0, sigma_w2=1.0),
        _config("sigmoid", "standard_normal", 1.0, -30.0, sigma_w2=64.0),
    )
    rec = recommendations(judged_table(rows)).iloc[0]
    assert rec["recommended"] == "none"
    assert rec["best_init"] is None or (
        isinstance(rec["best_init"], float) and math.isnan(rec["best_init"])
    )
    assert rec["closest"].startswith("xavier_normal: gradient variance falls by 10^6.0")


def test_offenders_take_turns_per_failure_and_name_every_failing_dtype() -> None:
    rows = _rows(
        _config("relu", "standard_normal", 25.0, 3.0, sigma_w2=64.0),
        _config("relu", "standard_normal", 3.0, 3.0, sigma_w2=64.0, dtype="float16",
                nonfinite_at=4),
        _config("gelu", "standard_normal", 3.0, 3.0, nonfinite_at=8),
        _config("selu", "standard_normal", 30.0, 3.0, sigma_w2=64.0),
        _config("tanh", "normal", -9.0, -1.0, sigma_w2=0.0064),
        _config("tanh", "xavier_normal", -3.0, -1.0, sigma_w2=1.0),
        _config("relu", "kaiming_normal", 0.0, 0.0),
    )  # fmt: skip
    worst = offenders(judged_table(rows), n=4)
    assert worst[["activation", "verdict"]].values.tolist() == [
        ["relu", "non-finite"],  # 42 inf/NaN values beat gelu's 18
        ["selu", "explodes"],
        ["tanh", "vanishes"],  # -9 before -3
        ["gelu", "non-finite"],  # second turn
    ]
    first = worst.iloc[0]
    assert first["dtype"] == "float16" and first["fails_in"] == "float16, float32"
    assert offenders(judged_table(_rows(_config("relu", "kaiming_normal", 0.0, 0.0)))).empty


def test_non_finite_variance_without_non_finite_values_says_so() -> None:
    rows = _rows(_config("relu", "standard_normal", 1.0, 1.0, sigma_w2=64.0))
    rows.loc[rows["layer"] == DEPTH, "preact_var"] = float("inf")
    rows.loc[rows["layer"] == 1, "preact_var"] = float("inf")
    row = judged_table(rows).iloc[0]
    assert row["verdict"] == "non-finite"
    assert row["reason"] == (
        "non-finite: the signal variance is inf or NaN at the first or last layer, though no "
        "value in the tensors is"
    )


def test_borderline_per_direction_marks_the_heat_map_cell() -> None:
    row = judged_table(_rows(_config("tanh", "kaiming_normal", -0.5, 1.9, sigma_w2=2.0))).iloc[0]
    assert row["borderline"] and row["bwd_borderline"] and not row["fwd_borderline"]


def test_empty_rows_give_empty_tables() -> None:
    empty = pd.DataFrame()
    assert judged_table(empty).empty
    assert recommendations(empty).empty
    assert offenders(empty).empty
