"""Drawn weights kept for the next stack whose cells need the same ones.

A sweep grid crosses activations with inits and seeds, and a cell's weights depend on its
init, seed, depth, width and dtype but not on its activation (``draw_weights`` never reads
it). Stacks are cut by activation, so a 5-activation grid drew every weight set five
times: at width 256 the draws (one mt19937 number per weight) were a sixth of the stacked
sweep's time, and a copy of a set drawn before is about ten times cheaper than drawing it.

The cache holds whole stacks' weight tensors, oldest dropped first, within a byte budget;
a hit is copied, so the values are the drawn ones bit for bit. A stack whose cells are
exactly a kept stack's, in the same order (the next activation of the same grid), takes
that tensor itself (``get_stack``): no allocation, no copy, nothing kept twice (the probe
only reads its weights). LSUV is not cached: it rescales each layer on a forward pass
through the cell's own activation.
"""

from collections import OrderedDict

import torch

from stability.core.config import MLPConfig
from stability.core.inits import get_init

WeightKey = tuple[str, int, int, int, str, str]


def weight_key(config: MLPConfig) -> WeightKey | None:
    """Everything a cell's drawn weights depend on; None where they depend on more (LSUV)."""
    c = config
    if get_init(c.init).data_driven:
        return None
    return (c.init, c.seed, c.depth, c.width, c.dtype, c.device)


class WeightCache:
    """Stacks' weights ``(depth, S, width, width)`` by cell, within ``capacity`` bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._stacks: OrderedDict[int, tuple[torch.Tensor, dict[WeightKey, int]]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: WeightKey | None) -> torch.Tensor | None:
        """The ``(depth, width, width)`` weights drawn for ``key`` before, or None."""
        if key is not None:
            for weights, index in reversed(self._stacks.values()):
                if key in index:
                    self.hits += 1
                    return weights[:, index[key]]
        self.misses += 1
        return None

    def get_stack(self, keys: list[WeightKey | None]) -> torch.Tensor | None:
        """A kept stack's whole ``(depth, S, width, width)`` weights when its cells are
        exactly ``keys``, in order; None otherwise (or where a key is None)."""
        if not keys or any(k is None for k in keys):
            return None
        wanted = {k: j for j, k in enumerate(keys)}
        for weights, index in reversed(self._stacks.values()):
            if index == wanted and weights.shape[1] == len(keys):
                self.hits += len(keys)
                return weights
        return None

    def put(self, weights: torch.Tensor, keys: list[WeightKey | None]) -> None:
        """Keep one stack's weights (cell ``j`` of ``keys`` at ``weights[:, j]``); the
        oldest stacks go while the cache would exceed its capacity."""
        size = weights.numel() * weights.element_size()
        index = {k: j for j, k in enumerate(keys) if k is not None}
        if not index or size > self.capacity:
            return
        while self._stacks and self.held() + size > self.capacity:
            self._stacks.popitem(last=False)
        self._stacks[id(weights)] = (weights, index)

    def clear(self) -> None:
        """Drop every kept stack (out of memory: their room goes to the next try)."""
        self._stacks.clear()

    def held(self) -> int:
        """Bytes of weights the cache keeps alive."""
        return sum(w.numel() * w.element_size() for w, _ in self._stacks.values())
