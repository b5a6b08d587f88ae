"""The band's judgement beside the verdict: z-scores, verdict words, old rows without a band."""

import math

import pandas as pd

from stability.report.sections.atlas import band_note, caveat_notes
from stability.results.band import BAND_Z, band_table, band_verdict
from stability.results.tables import CONFIG_KEYS, judged_table


def _rows(
    values: list[float], lo: float = -1.0, hi: float = 1.0, band: bool = True
) -> pd.DataFrame:
    """Two-layer rows of one config, one seed per value (log10 of both variances)."""
    out = []
    for seed, v in enumerate(values):
        for layer in (1, 2):
            row = {
                "activation": "relu", "init": "kaiming_normal", "dtype": "float32",
                "precision_mode": "native", "depth": 2, "width": 8, "batch": 4, "seed": seed,
                "layer": layer, "preact_var": 10.0**v, "grad_var": 10.0**v, "nonfinite": 0,
                "theory_preact_var": 1.0, "theory_grad_var": 1.0,
            }  # fmt: skip
            if band:
                row.update(
                    pred_log10_preact_var_lo=lo, pred_log10_preact_var_hi=hi,
                    pred_log10_grad_var_lo=lo, pred_log10_grad_var_hi=hi,
                    theory_caveat="",
                )  # fmt: skip
            out.append(row)
    return pd.DataFrame(out)


def test_verdict_words() -> None:
    assert band_verdict(0.5, -1.0) == "inside"
    assert band_verdict(BAND_Z * 1.5, 0.0) == "edge"
    assert band_verdict(0.0, -BAND_Z * 2.5) == "outside"
    assert band_verdict(math.nan, math.nan) == "no band"
    assert band_verdict(math.nan, 0.1) == "inside"


def test_seeds_inside_edge_outside() -> None:
    """The worst seed decides: a band of half width 1 decade around 0."""
    for values, word in (([0.2, -0.9], "inside"), ([0.2, 1.5], "edge"), ([0.2, -2.5], "outside")):
        table = band_table(_rows(values), CONFIG_KEYS)
        assert table["band_verdict"].tolist() == [word], values
    table = band_table(_rows([0.2, -0.9, 1.5]), CONFIG_KEYS)
    assert math.isclose(float(table["band_fwd_inside"].iloc[0]), 2 / 3)
    assert math.isclose(float(table["band_fwd_z"].iloc[0]), 1.5 * BAND_Z)


def test_a_band_narrower_than_rounding_is_judged_at_the_rounding() -> None:
    """Orthogonal identity layers predict no spread (a zero-width band); float32 rounding
    still moves the measured variance (here up to 2.6e-7 decades: depth 2, 32 terms): inside."""
    for off, word in ((2e-7, "inside"), (1e-5, "outside")):  # floor here: 2.6e-7 decades
        table = band_table(_rows([off, 0.0], lo=0.0, hi=0.0), CONFIG_KEYS)
        assert table["band_verdict"].tolist() == [word], off


def test_rows_without_a_band_are_judged_as_before() -> None:
    """Rows stored before the band existed: same verdicts, band_verdict 'no band'."""
    old, new = judged_table(_rows([0.1, 0.2], band=False)), judged_table(_rows([0.1, 0.2]))
    assert old["verdict"].tolist() == new["verdict"].tolist() == ["stable"]
    assert old["band_verdict"].tolist() == ["no band"]
    assert new["band_verdict"].tolist() == ["inside"]


def test_atlas_names_each_caveat_reason_once_with_every_config_it_marks() -> None:
    marked = pd.DataFrame(
        {
            "activation": ["selu", "sigmoid", "gelu"],
            "init": ["kaiming_normal", "xavier_normal", "kaiming_normal"],
            "theory_caveat": [
                "backward: a non-zero mean (8% of the second moment) the activation drops",
                "backward: a non-zero mean (94% of the second moment) the activation drops",
                "length map bends 0.61 away from its tangent",
            ],
        }
    )
    notes = caveat_notes(marked)
    assert len(notes) == 2
    assert "selu/kaiming_normal, sigmoid/xavier_normal: backward: a non-zero mean the" in notes[0]
    assert notes[1].startswith("Theory's assumptions fail for gelu/kaiming_normal: length map")


def test_atlas_separates_unstable_configs_from_misses_of_the_theory() -> None:
    out = pd.DataFrame(
        {
            "activation": ["relu", "tanh", "selu"],
            "init": ["normal", "xavier_normal", "normal"],
            "verdict": ["vanishes", "stable", "explodes"],
        }
    )
    note = band_note(out, 42)
    assert note.startswith("3 of 42 drawn configs have a seed outside the predicted band")
    assert "2 of them are unstable" in note and "(relu/normal, selu/normal)" in note
    assert "1 are stable, and there the theory misses (tanh/xavier_normal)" in note
