"""Linear maps at their critical sigma_w^2 keep every q: the solver must not pick 0 or inf by
the sign of a rounding error (identity's recommendation read "no critical line")."""

import torch

from stability.core.best_init import BIAS_GRID, best_init
from stability.core.criticality import critical_sigma_w2, q_star


def test_identity_and_relu_at_their_critical_point_are_marginal_not_divergent() -> None:
    sb2 = torch.zeros(3, dtype=torch.float64)
    for act, sw2 in (("identity", 1.0), ("relu", 2.0)):
        nudged = torch.tensor([sw2 * (1 - 1e-15), sw2, sw2 * (1 + 1e-15)], dtype=torch.float64)
        assert q_star(act, nudged, sb2).tolist() == [0.0, 0.0, 0.0], act


def test_a_linear_map_off_its_critical_point_still_vanishes_or_diverges() -> None:
    sw2 = torch.tensor([0.9, 1.1], dtype=torch.float64)
    assert q_star("identity", sw2, torch.zeros(2, dtype=torch.float64)).tolist() == [
        0.0,
        float("inf"),
    ]


def test_identity_has_a_critical_point_and_orthogonal_weights_keep_it_isometric() -> None:
    sb2 = torch.tensor(BIAS_GRID, dtype=torch.float64)
    assert torch.allclose(critical_sigma_w2("identity", sb2), torch.ones_like(sb2))
    rec = best_init("identity", 50)
    assert abs(rec.sigma_w2 - 1.0) < 1e-9
    assert rec.sigma_b2 == 0.0 and rec.isometric and rec.jj_normalised_var == 0.0
