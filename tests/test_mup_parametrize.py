"""``stability.mup.parametrize`` on a user's model: roles, groups, multipliers, notes."""

import torch
from torch import nn

from examples.transformer_scaling import build
from stability.mup import parametrize


def test_roles_groups_and_multipliers_of_a_transformer() -> None:
    with torch.device("meta"):
        reference = build(width=256, depth=2)
    model = build(width=128, depth=2)
    plan = parametrize(model, base_width=32, width=128, optimizer="adam", lr=1e-2,
                       eps=1e-8, reference=reference)  # fmt: skip
    roles = {r.name: r.role for r in plan.roles}
    assert roles["embed.weight"] == "input"
    assert roles["layers.0.attn.qkv.weight"] == "hidden"
    assert roles["head.weight"] == "output" and roles["head.bias"] == "fixed"
    assert roles["layers.1.ln2.weight"] == "vector"
    lr = {g["name"]: g["lr"] for g in plan.groups}
    eps = {g["name"]: g["eps"] for g in plan.groups}
    assert lr["layers.0.mlp.fc1.weight"] == 1e-2 / 4 and lr["embed.weight"] == 1e-2
    assert eps["layers.0.mlp.fc1.weight"] == 1e-8 / 4 and eps["head.bias"] == 1e-8
    assert plan.multipliers == {"head.weight": 0.25}
    assert float(model.head.weight.detach().abs().max()) == 0.0  # the readout starts at zero
    plan.optimizer("adam").step()  # every parameter is in exactly one group


def test_modules_it_does_not_know_are_named() -> None:
    # No reference model: 128 (a multiple of the width) is taken as width-like, and said.
    model = nn.Sequential(nn.Linear(4, 64), nn.Conv1d(64, 64, 1), nn.Linear(64, 128))
    plan = parametrize(model, base_width=32, width=64)
    assert any("1.weight (Conv1d" in n and "not classified" in n for n in plan.notes)
    assert any("no reference model: sizes [128]" in n for n in plan.notes)
    names = [g["name"] for g in plan.groups]
    assert "unclassified" in names
