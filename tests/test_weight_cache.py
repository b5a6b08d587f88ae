"""Drawn weights reused across stacks: the same bits as a fresh draw, within the budget."""

from dataclasses import replace

import torch

from stability.core.config import MLPConfig
from stability.core.stacked import _draw_all, draw_weights
from stability.core.weight_cache import WeightCache, weight_key

BASE = MLPConfig(depth=3, width=16, activation="tanh", init="xavier_normal", seed=0)


def test_weights_do_not_depend_on_the_activation_so_the_key_leaves_it_out() -> None:
    other = replace(BASE, activation="relu")
    assert weight_key(BASE) == weight_key(other)
    assert torch.equal(draw_weights(BASE), draw_weights(other))
    assert weight_key(replace(BASE, seed=1)) != weight_key(BASE)
    assert weight_key(replace(BASE, dtype="float16")) != weight_key(BASE)


def test_lsuv_weights_are_never_cached() -> None:
    assert weight_key(replace(BASE, init="lsuv")) is None
    cache = WeightCache(2**30)
    assert cache.get(None) is None


def test_a_second_stack_copies_the_first_stacks_weights_bit_for_bit() -> None:
    cache = WeightCache(2**30)
    first = [replace(BASE, seed=s) for s in (0, 1)]
    second = [replace(c, activation="relu") for c in reversed(first)]
    _draw_all(first, cache)
    assert (cache.hits, cache.misses) == (0, 2)
    reused = _draw_all(second, cache)
    assert (cache.hits, cache.misses) == (2, 2)
    assert torch.equal(reused, _draw_all(second))  # the same as drawing them afresh


def test_the_cache_drops_its_oldest_stacks_to_stay_within_capacity() -> None:
    one = 3 * 16 * 16 * 4  # one cell's float32 weights
    cache = WeightCache(2 * one)
    for seed in range(3):
        _draw_all([replace(BASE, seed=seed)], cache)
    assert cache.held() <= 2 * one
    assert cache.get(weight_key(replace(BASE, seed=0))) is None  # dropped first
    assert cache.get(weight_key(replace(BASE, seed=2))) is not None
    small = WeightCache(one - 1)  # a stack larger than the cache is not kept at all
    _draw_all([BASE], small)
    assert small.held() == 0
    cache.clear()
    assert cache.held() == 0


def test_a_stack_of_the_same_cells_in_order_takes_the_kept_tensor_itself() -> None:
    """The next activation of a grid has the same cells: no copy and nothing kept twice;
    another order, or a different cell, is a new tensor built by copies and draws."""
    cache = WeightCache(2**30)
    first = [replace(BASE, seed=s) for s in (0, 1)]
    kept = _draw_all(first, cache)
    same = _draw_all([replace(c, activation="relu") for c in first], cache)
    assert same is kept and cache.held() == kept.numel() * kept.element_size()
    assert torch.equal(same, _draw_all(first))  # still the drawn values
    swapped = _draw_all(list(reversed(first)), cache)
    assert swapped is not kept and torch.equal(swapped[:, 0], kept[:, 1])
    other = _draw_all([first[0], replace(BASE, seed=2)], cache)
    assert other is not kept and torch.equal(other[:, 0], kept[:, 0])
