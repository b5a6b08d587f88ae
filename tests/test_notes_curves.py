"""The notes' curves (``stability.notes.curves``): pure, seeded, and saying what the notes say.

The report draws these frames as they come, so their numbers are checked here: gradients
from autograd against the closed forms, dropout's moments against its theory.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from stability.notes import curves


def test_loss_gradients_are_the_closed_forms() -> None:
    frames = curves.loss_curves(points=81)
    r = frames["L2"].index.to_numpy()
    np.testing.assert_allclose(frames["L2"]["gradient"], r)  # d(r^2/2)/dr = r
    away = np.abs(r) > 1e-9
    np.testing.assert_allclose(frames["L1"]["gradient"][away], np.sign(r[away]))
    np.testing.assert_allclose(frames["Huber"]["gradient"], np.clip(r, -1.0, 1.0))
    np.testing.assert_allclose(frames["L2"]["likelihood exp(-loss)"], np.exp(-(r**2) / 2))


def test_taylor_polynomials_touch_their_activation_at_zero() -> None:
    for name, frame in curves.taylor_curves(points=61).items():
        near = frame.loc[np.abs(frame.index) < 0.05]
        act, poly = near.iloc[:, 0], near.iloc[:, 1]
        assert np.max(np.abs(act - poly)) < 1e-5, name  # the error is O(x^5) there


def test_sigmoid_gradient_peaks_at_a_quarter() -> None:
    frame = curves.sigmoid_gradient()
    assert frame["gradient"].max() == pytest.approx(0.25)
    assert frame["gradient"].idxmax() == pytest.approx(0.0)
    assert (frame.loc[np.abs(frame.index) > 7.0, "gradient"] < 1e-3).all()


def test_matrix_products_explode_without_scaling() -> None:
    frame = curves.matrix_products()
    last = frame[frame["factors"] == curves.MATRIX_FACTORS].groupby("scale")["log10_max_abs"]
    assert last.min()["N(0, 1)"] > 10  # orders of magnitude up (the notes' example: 1e24)
    assert last.max()["N(0, 1/n)"] < 5  # the 1/sqrt(n) scaling keeps it near 1


def test_dropout_moments_match_theory() -> None:
    frame = curves.dropout_moments(ps=(0.0, 0.5, 0.9))
    # 200 000 values: the mean's standard error is below 0.01 even at p = 0.9.
    np.testing.assert_allclose(frame["mean (measured)"], frame["mean (theory)"], atol=0.03)
    np.testing.assert_allclose(frame["variance (measured)"], frame["variance (theory)"], rtol=0.05)
    unscaled = frame["mean without 1/(1-p)"] / (1 - frame["p"])
    np.testing.assert_allclose(unscaled, frame["mean (measured)"])


def test_curves_are_reproducible_and_leave_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    first, second = curves.dropout_moments(ps=(0.3,)), curves.dropout_moments(ps=(0.3,))
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(curves.matrix_products(), curves.matrix_products())
    assert torch.equal(torch.random.get_rng_state(), state)
