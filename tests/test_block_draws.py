"""A cell's layers drawn in one call are build_mlp's draws bit for bit (core/block_draws.py).

For every init that draws entry by entry, at layer sizes that are and are not multiples of
16 (torch's normal fill works in 16s), into a fresh tensor and into a strided slice of a
stack, ``draw_weights`` equals the weights ``build_mlp`` holds. The witnesses: one call
without the per-process check, at width 5, and one call straight into the strided slice,
each give other weights.
"""

import pytest
import torch

from stability.core import block_draws
from stability.core.config import MLPConfig
from stability.core.inits import INITS, Init, get_init
from stability.core.model import build_mlp
from stability.core.stacked import draw_weights

ENTRYWISE = sorted(name for name, init in INITS.items() if init.entrywise)
WIDTHS = (4, 5, 7, 16, 64)


def reference(config: MLPConfig) -> torch.Tensor:
    return torch.stack([b.linear.weight.detach() for b in build_mlp(config).layers])


def into_stack_slice(config: MLPConfig) -> torch.Tensor:
    """What a stack does: draw straight into cell 1's strided slice of ``(depth, 3, w, w)``."""
    stack = torch.zeros(config.depth, 3, config.width, config.width)
    draw_weights(config, stack[:, 1])
    return stack[:, 1]


def check_draws(name: str, width: int) -> None:
    config = MLPConfig(depth=4, width=width, init=name, seed=11)
    want = reference(config)
    assert torch.equal(draw_weights(config), want)
    assert torch.equal(into_stack_slice(config), want)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", ENTRYWISE)
def test_one_call_draws_are_build_mlps_draws(name: str, width: int) -> None:
    check_draws(name, width)


def test_the_orthogonal_and_lsuv_inits_are_drawn_layer_by_layer() -> None:
    assert not get_init("orthogonal").entrywise and not get_init("lsuv").entrywise


def unchecked_fill(init: Init, weights: torch.Tensor, gen: torch.Generator) -> None:
    """Known bad: one call whatever the layer size, straight into whatever tensor."""
    init.apply(weights, gen)


def test_witness_one_call_at_width_5_without_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stability.core.stacked.fill_layers", unchecked_fill)
    config = MLPConfig(depth=4, width=5, init="kaiming_normal", seed=11)
    assert not torch.equal(draw_weights(config), reference(config))


def test_witness_one_call_straight_into_a_strided_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stability.core.stacked.fill_layers", unchecked_fill)
    config = MLPConfig(depth=4, width=16, init="kaiming_normal", seed=11)
    assert torch.equal(draw_weights(config), reference(config))  # contiguous: the same
    assert not torch.equal(into_stack_slice(config), reference(config))


def test_large_layers_are_drawn_layer_by_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    monkeypatch.setattr(block_draws, "block_draw_matches", lambda *a: asked.append(1) or True)
    width = 128  # 2**14 elements a layer: at the threshold
    config = MLPConfig(depth=2, width=width, init="kaiming_normal", seed=3)
    assert torch.equal(draw_weights(config), reference(config)) and not asked
