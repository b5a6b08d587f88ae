"""The hand-written peer of ``stability sweep`` (issue 16, 27), importable and runnable.

What a user would write by hand, one cell after another: draw the weights with the cell's
generator (the same init functions), matmuls with autograd and ``retain_grad``, the
projection loss, then the same variances (pre-activation, activation, gradient, weight
gradient) per layer, read back once per cell. ``python benchmarks/sweep_peer.py DEPTH WIDTH
BATCH`` runs it over the benchmarks' grid as a command, start-up included, to set against
the ``stability sweep`` command.
"""

import sys
from collections.abc import Sequence

import torch

from stability.core.activations import get_activation
from stability.core.config import MLPConfig
from stability.core.inits import get_init
from stability.core.model import input_batch
from stability.core.probe import PROJECTION_SEED

ACTIVATIONS = ("identity", "relu", "tanh", "scaled_logistic", "selu")
INITS = ("torch_default", "xavier_normal", "kaiming_normal", "lecun_normal")
SEEDS = (0, 1)


def peer_cell(config: MLPConfig, batch: int) -> list[list[float]]:
    """The hand-written loop for one cell: per layer [preact, act, grad, weight grad] var."""
    gen = torch.Generator().manual_seed(config.seed)
    init = get_init(config.init)
    weights = []
    for _ in range(config.depth):
        w = torch.empty(config.width, config.width)
        init.apply(w, gen)
        weights.append(w.requires_grad_())
    phi = get_activation(config.activation).factory()
    x = input_batch(config, batch)
    pre, acts = [], []
    for w in weights:
        h = x @ w.T
        x = phi(h)
        x.retain_grad()
        pre.append(h.detach())
        acts.append(x)
    r = torch.randn(x.shape, generator=torch.Generator().manual_seed(PROJECTION_SEED))
    (x * r).sum().backward()  # type: ignore[no-untyped-call]
    variances = [
        torch.stack(pre).var(dim=(1, 2)),
        torch.stack([a.detach() for a in acts]).var(dim=(1, 2)),
        torch.stack([a.grad for a in acts if a.grad is not None]).var(dim=(1, 2)),
        torch.stack([w.grad for w in weights if w.grad is not None]).var(dim=(1, 2)),
    ]
    table: list[list[float]] = torch.stack(variances, dim=1).tolist()
    return table


def grid_configs(depth: int, width: int) -> list[MLPConfig]:
    """The benchmarks' grid, in the sweep's cell order (activation, init, seed)."""
    return [
        MLPConfig(depth=depth, width=width, activation=a, init=i, seed=s)
        for a in ACTIVATIONS
        for i in INITS
        for s in SEEDS
    ]


def main(argv: Sequence[str]) -> int:
    depth, width, batch = (int(a) for a in argv)
    rows = [peer_cell(c, batch) for c in grid_configs(depth, width)]
    print(f"peer: {len(rows)} cells, {sum(len(r) for r in rows)} layers")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
