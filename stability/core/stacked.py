"""Stacked probe networks: S cells of one shape run as one network of batched matmuls.

A sweep's cells that share (activation, depth, width, dtype, bias, device, batch) differ
only in their weights and inputs (init and seed). ``probe_stack`` runs them together: layer
``l`` is one ``torch.bmm`` over an ``(S, batch, width)`` input and ``(S, width, width)``
weights, one weight matrix per cell, and every statistic is one batched reduction over S
rows (``core/stacked_stats.py``). Per layer the Python, dispatch and autograd cost is paid
once for the stack instead of once per cell: at width 256 on CPU that cost is comparable to
the GEMM itself, and on a GPU a per-cell loop is launch-bound.

What each cell computes is the per-cell path's arithmetic, so its rows equal
``probe(build_mlp(config), input_batch(config, batch))`` to float rounding:

- weights are drawn by ``draw_weights`` exactly as ``build_mlp`` draws them (one generator
  seeded with the cell's seed, layer after layer; LSUV through ``build_mlp`` itself; rounded
  to the target dtype when emulating), or copied from a ``WeightCache`` that holds the
  same cells' draws from an earlier stack; inputs are ``input_batch``'s, one per cell;
- biases start at zero, so ``x @ W.T`` without them gives the same values and gradients;
- emulated reduced precision rounds the pre-activation and the output with
  ``round_with_grad``, as ``MLPBlock`` does; the backward pass is autograd's, through the
  same activation modules, from the same projection ``R`` (``projection_loss``'s seed).
"""

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from stability.core.activations import get_activation
from stability.core.block_draws import fill_layers
from stability.core.config import MLPConfig, check_batch
from stability.core.dtypes import DType
from stability.core.emulation import round_to, round_with_grad
from stability.core.exact_scale import weight_gradient
from stability.core.inits import get_init
from stability.core.model import build_mlp, input_batch
from stability.core.probe import PROJECTION_SEED, LayerStats, layer_stats
from stability.core.stacked_stats import (
    event_counts,
    finish_moments,
    keep_for_finish,
    nonfinite_count,
    raw_moments,
    row_max_abs,
    rows,
    two_pass_var,
)
from stability.core.weight_cache import WeightCache, weight_key

ShapeKey = tuple[str, int, int, str, bool, float, str, int]
# One layer's gradient: its raw moments, its (S, n) rows (None where no reread will need
# them), and at reduced precision the unrounded non-finite count and the events, ``(S, 4)``.
GradEntry = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]


def shape_key(config: MLPConfig, batch: int) -> ShapeKey:
    """What cells of one stack share: everything but the init and the seed."""
    c = config
    return (c.activation, c.depth, c.width, c.dtype, c.bias, c.bias_var, c.device, batch)


def stackable(config: MLPConfig) -> bool:
    """Whether ``probe_stack`` computes this cell: biases must start at zero (``bias_var``
    0), since the stacked layers add none; other cells take the per-cell path."""
    return not (config.bias and config.bias_var > 0)


def draw_weights(config: MLPConfig, out: torch.Tensor | None = None) -> torch.Tensor:
    """The ``(depth, width, width)`` weights ``build_mlp(config)`` would hold, bit for bit,
    on the config's device in its compute dtype; drawn straight into ``out`` if given (a
    slice of the stack's weights, so the stack needs no second copy)."""
    precision = config.precision
    init = get_init(config.init)
    if init.data_driven:  # LSUV rescales on forward passes: let the model do it
        model = build_mlp(config)
        drawn = torch.stack([b.linear.weight.detach() for b in model.layers])
        return drawn if out is None else out.copy_(drawn)
    direct = out is not None and out.device.type == "cpu" and out.dtype == torch.float32
    weights = (
        out if direct and out is not None else torch.empty(config.depth, *([config.width] * 2))
    )
    gen = torch.Generator().manual_seed(config.seed)
    fill_layers(init, weights, gen)  # the same draws, in the same order, as build_mlp's
    if precision.round_dtype is not None:
        weights.copy_(round_to(weights, precision.round_dtype))
    if direct and out is not None:
        return out
    moved = weights.to(device=config.device, dtype=precision.compute_dtype)
    return moved if out is None else out.copy_(moved)


def _draw_all(configs: Sequence[MLPConfig], cache: WeightCache | None = None) -> torch.Tensor:
    """Every cell's weights, ``(depth, S, width, width)``, never written to afterwards: an
    earlier stack's own tensor where it held exactly these cells, else copied from
    ``cache`` where an earlier stack drew them, else drawn. Cells draw on their own
    generators, so threads may share the work (the draws release the GIL): on a GPU host
    the CPU draws are otherwise the floor."""
    first = configs[0]
    dtype = first.precision.compute_dtype
    shape = (first.depth, len(configs), first.width, first.width)
    keys = [weight_key(c) for c in configs]
    whole = None if cache is None else cache.get_stack(keys)
    if whole is not None and whole.shape == shape and whole.dtype == dtype:
        return whole  # the same cells' weights, kept by an earlier stack: read only
    stack = torch.empty(shape, dtype=dtype, device=first.device)
    jobs = []
    for j, (c, key) in enumerate(zip(configs, keys, strict=True)):
        drawn = None if cache is None else cache.get(key)
        if drawn is None:
            jobs.append((c, stack[:, j]))
        else:
            stack[:, j].copy_(drawn)
    workers = min(len(jobs), max(1, torch.get_num_threads()), os.cpu_count() or 1)
    if workers <= 1:
        for c, out in jobs:
            draw_weights(c, out)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda job: draw_weights(*job), jobs))
    if cache is not None:
        cache.put(stack, keys)
    return stack


def check_stackable(configs: Sequence[MLPConfig], batch: int) -> None:
    """Refuse a stack whose cells do not share a shape (a bug in the caller, not bad input)."""
    if not configs:
        raise ValueError("a stack needs at least one cell")
    check_batch(batch)
    if not all(stackable(c) for c in configs):
        raise ValueError("a stack's biases start at zero: cells with bias_var > 0 run per cell")
    keys = {shape_key(c, batch) for c in configs}
    if len(keys) != 1:
        raise ValueError(f"cells of one stack must share a shape, got {sorted(keys)}")


def probe_stack(
    configs: Sequence[MLPConfig], batch: int, cache: WeightCache | None = None
) -> list[list[LayerStats]]:
    """One forward and backward pass of every cell, stacked; per cell, per-layer statistics
    (the same ``LayerStats`` as ``probe(build_mlp(config), input_batch(config, batch))``).
    ``cache`` lends weights drawn for an earlier stack and keeps this one's."""
    check_stackable(configs, batch)
    first = configs[0]
    precision = first.precision
    fmt: DType | None = precision.format if precision.format.reduced else None
    round_dtype = precision.round_dtype
    s, depth = len(configs), first.depth
    weights = _draw_all(configs, cache)  # (depth, S, width, width)
    # Each layer multiplies by its weights transposed, ``(S, in, out)`` views. The weights
    # are constants to autograd: each layer's weight gradient is formed in the hook on its
    # pre-activation as autograd's bmm backward forms it (``x^T @ g``, contiguous) and
    # reduced there, so the stack never holds all of them at once (as large as the weights:
    # 100 MB at depth 50, width 256 and 8 cells).
    w_t = [weights[i].transpose(1, 2) for i in range(depth)]
    x = x_in = torch.stack([input_batch(c, batch) for c in configs])  # (S, batch, width)
    activation = get_activation(first.activation).factory()
    zeros = torch.zeros(s, 3, dtype=torch.float64, device=x.device)
    # Per layer only the raw reductions (``raw_moments``) while each tensor is hot; the
    # arithmetic on them runs once for all layers after the backward pass. A tensor is kept
    # for that only where it will be read again, or is small (``keep_for_finish``; None
    # otherwise): memory a stack need not touch.
    act_raw: list[torch.Tensor] = []
    act_flat: list[torch.Tensor | None] = []
    pre_raw: list[torch.Tensor] = []
    pre_flat: list[torch.Tensor | None] = []
    fwd_events: list[torch.Tensor] = []
    arrived: list[GradEntry | None] = [None] * depth  # None where no gradient arrived
    weight_var: list[torch.Tensor | None] = [None] * depth
    weight_raw: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def on_pre_grad(index: int, inputs: torch.Tensor, grad: torch.Tensor) -> None:
        # For the exact rescale (CPU only), |inputs| is bounded by the forward's extremes of
        # the layer below, or the input's: read back only if the rescale runs.
        def bound() -> float:
            return _abs_bound(act_raw[index - 1]) if index > 0 else float(inputs.abs().amax())

        weight_grad = weight_gradient(inputs, grad, bound)
        flat = rows(weight_grad)
        if flat.device.type != "cpu":  # no sync to decide; nothing kept for a finish
            weight_var[index] = two_pass_var(flat).double()
            return
        # On CPU the per-cell rule decides at once (one-pass where safe): two passes over
        # the weight gradient instead of four and a temporary as large as the weights.
        raw = raw_moments(flat, extremes=False)
        weight_raw[index] = (raw, flat if keep_for_finish(raw, flat) else None)

    def on_grad(index: int, grad: torch.Tensor) -> None:
        g = grad.detach()
        rounded = g if fmt is None or g.dtype == fmt.dtype else round_to(g, fmt.dtype)
        flat = rows(rounded)
        tail = None
        if fmt is not None:
            nonfinite = nonfinite_count(rows(g)).unsqueeze(1)
            tail = torch.cat([nonfinite, event_counts(g, fmt)], dim=1)
        raw = raw_moments(flat, extremes=False)
        arrived[index] = (raw, flat if keep_for_finish(raw, flat) else None, tail)

    start: torch.Tensor | None = None  # the first pre-activation: where the graph begins
    for i in range(depth):
        h = torch.bmm(x, w_t[i])  # x @ W^T; zero biases add nothing
        if start is None:
            start = h.requires_grad_()
        else:
            h.register_hook(lambda g, i=i, x=x: on_pre_grad(i, x, g))  # type: ignore[no-untyped-call]
        events = zeros
        if round_dtype is not None and fmt is not None:
            events = event_counts(h, fmt)
            h = round_with_grad(h, round_dtype)
        flat = rows(h)
        pre_raw.append(raw_moments(flat, extremes=False))
        pre_flat.append(flat if keep_for_finish(pre_raw[-1], flat) else None)
        a: torch.Tensor = activation(h)
        if round_dtype is not None and fmt is not None:
            events = torch.maximum(events, event_counts(a, fmt))
            a = round_with_grad(a, round_dtype)
        elif fmt is not None:  # native reduced precision: the damage present in the output
            events = event_counts(a, fmt)
        flat = rows(a)
        act_raw.append(raw_moments(flat, extremes=True))
        act_flat.append(flat if keep_for_finish(act_raw[-1], flat) else None)
        fwd_events.append(events)
        a.register_hook(lambda g, i=i: on_grad(i, g))  # type: ignore[no-untyped-call]
        x = a
    gen = torch.Generator().manual_seed(PROJECTION_SEED)
    r = torch.randn(x.shape[1:], generator=gen).to(device=x.device, dtype=x.dtype)
    # The per-cell probe's projection loss, sum(out * R) per cell: its gradient at the output
    # is R exactly (ones times R), whatever the output holds (inf, NaN). A scalar loss also
    # keeps ``autograd.grad`` off its check of given gradient shapes, whose first call
    # imports sympy (torch.fx's symbolic shapes): 0.6-0.8 s of every sweep process.
    loss = (x * r).sum()
    assert start is not None  # depth >= 1 (MLPConfig)
    (first_grad,) = torch.autograd.grad(loss, [start])
    on_pre_grad(0, x_in, first_grad)
    n = batch * first.width
    nan = torch.full((s, 5), math.nan, dtype=torch.float64, device=x.device)
    if weight_raw:
        found = sorted(weight_raw)
        raws = torch.stack([weight_raw[i][0] for i in found])
        finished = finish_moments(raws, [weight_raw[i][1] for i in found], first.width**2)
        for k, i in enumerate(found):
            weight_var[i] = finished[k, :, 1]
    wgv = torch.stack([nan[:, 0] if v is None else v for v in weight_var]).unsqueeze(2)
    fwd = finish_moments(torch.stack(act_raw), act_flat, n)
    pre = finish_moments(torch.stack(pre_raw), pre_flat, n)[..., :2]
    columns = [fwd, torch.stack(fwd_events), pre, _backward(arrived, n, nan)]
    table = torch.cat([*columns, wgv], dim=2).tolist()  # (depth, S, 15): one read back
    return [[_layer_stats(i + 1, table[i][j], n) for i in range(depth)] for j in range(s)]


def _abs_bound(raw: torch.Tensor) -> float:
    """The largest ``|value|`` over a stack's rows, from ``raw_moments(..., extremes=True)``."""
    return float(row_max_abs(raw).max())


def _backward(grad: list[GradEntry | None], n: int, nan: torch.Tensor) -> torch.Tensor:
    """``(depth, S, 5)``: per layer the gradient's variance, its non-finite count and its
    events (zero at full precision); NaN for a layer no gradient reached."""
    out = nan.unsqueeze(0).repeat(len(grad), 1, 1)
    reached = [(i, entry) for i, entry in enumerate(grad) if entry is not None]
    if not reached:
        return out
    raw = torch.stack([entry[0] for _, entry in reached])
    stats = finish_moments(raw, [entry[1] for _, entry in reached], n)
    for k, (i, (_, _, tail)) in enumerate(reached):
        if tail is None:  # full precision: non-finite as the reduction found it, no events
            tail = torch.cat([stats[k, :, 3:4], torch.zeros_like(stats[k, :, :3])], dim=1)
        out[i] = torch.cat([stats[k, :, 1:2], tail], dim=1)
    return out


def _layer_stats(layer: int, v: list[float], n: int) -> LayerStats:
    """Slots: 0-6 the forward's (``_FWD``), 7-8 the pre-activation's, 9-13 the gradient's,
    14 the weight gradient's variance."""
    return layer_stats(layer, v[0:7], v[7:9], v[9:14], v[14], n)
