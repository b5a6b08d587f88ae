"""Batched reductions for stacked networks: one row of a 2-D tensor per network of the stack.

The per-cell probe (``core/probe.py``) reduces one flat tensor per hook; a stack of S cells
holds S such tensors as the rows of an ``(S, n)`` tensor, and these functions reduce every
row in one call, so the Python and dispatch cost per layer does not grow with S. They
follow the per-cell arithmetic (one-pass variance while ``mean^2 <= E[x^2] / 2``, else two
passes; non-finite values counted only where a row's sum is not finite on CPU) so a stacked
row equals a per-cell row to float rounding. Nothing is read back to the host here except,
on CPU, the cheap "is any row non-finite" tests, where reading a scalar costs nothing.
"""

import math
import threading
from collections.abc import Sequence

import torch

from stability.core.dtypes import DType
from stability.core.probe import MOMENT_ONE_PASS_LIMIT, one_pass_safe


def rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` of shape (S, ...) as (S, n), reduced in at least float32 (as the probe's _flat)."""
    x = x.detach()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x.reshape(x.shape[0], -1)


DOT_ROWS_FROM = 32768  # elements per row from which one thread's dots beat ``vecdot``


def row_sumsq(flat: torch.Tensor) -> torch.Tensor:
    """Per-row sum of squares (each product rounded in the rows' dtype, then summed in it,
    as the per-cell probe's ``torch.dot``).

    With more than one intra-op thread, all rows in one kernel (``vecdot``), not one
    ``torch.dot`` per row: on CPU every dot is then its own parallel region, and on a
    machine whose other cores are busy each region waits for a descheduled worker,
    milliseconds per call for a 12 us reduction (issue 27). On one thread (every
    ``--jobs`` worker) no region is opened, and for long rows the rows' own dots (BLAS)
    are the faster kernel: for 8 x 65536 float32, 78 us against 118 us on an AMD EPYC
    (2.4 % of a width-256 stack's time) and 91 us against 241 us on an Intel Xeon; for
    short rows the per-call cost wins, and ``vecdot`` stays."""
    if (
        flat.device.type == "cpu"
        and flat.shape[1] >= DOT_ROWS_FROM
        and torch.get_num_threads() == 1
    ):
        return torch.stack([torch.dot(row, row) for row in flat])
    if flat.device.type == "cpu" and flat.numel() * flat.element_size() < SCRATCH_BELOW:
        return _squares(flat).sum(dim=1)
    sq: torch.Tensor = torch.linalg.vecdot(flat, flat, dim=1)
    return sq


SCRATCH_BELOW = 2**20  # bytes: squares of rows this small go to a reused buffer
SCRATCH_SHAPES = 8  # buffers a thread keeps at most (each under SCRATCH_BELOW)
_scratch = threading.local()  # this thread's buffers, by (shape, dtype): never shared


def _squares(flat: torch.Tensor) -> torch.Tensor:
    """``flat * flat`` in this thread's buffer for its shape. On CPU ``vecdot`` of real
    rows is this product and the row sums, bit for bit, but its product takes a fresh
    block each call: at width 64 (8 x 4096 floats) a stack ran 9 % faster with the buffer
    reused, which stays in cache (issue 27). The caller only reads it before the next call."""
    buffers: dict[tuple[tuple[int, ...], torch.dtype], torch.Tensor] = getattr(
        _scratch, "buffers", {}
    )
    _scratch.buffers = buffers
    key = (tuple(flat.shape), flat.dtype)
    buf = buffers.get(key)
    if buf is None:
        if len(buffers) >= SCRATCH_SHAPES:  # a sweep over many shapes: keep the latest
            buffers.clear()
        buf = buffers[key] = torch.empty(flat.shape, dtype=flat.dtype)
    return torch.mul(flat, flat, out=buf)


def two_pass_var(flat: torch.Tensor) -> torch.Tensor:
    """Per-row biased variance in the rows' dtype: mean first, then the deviations' dot."""
    n = flat.shape[1]
    mean = flat.sum(dim=1, keepdim=True) / n
    return row_sumsq(flat - mean) / n


def raw_moments(flat: torch.Tensor, extremes: bool) -> torch.Tensor:
    """``(S, 2)``, or ``(S, 4)`` with ``extremes``: ``[sum, sum of squares, amax, amin]`` per
    row, in the rows' dtype: what a layer must reduce while its tensor is hot in cache.
    Everything else (means, variances, the checks) is arithmetic on these few numbers, done
    for all layers at once by ``finish_moments``: per layer this costs 3-5 kernels, not
    twenty, which at width 32 is most of a layer's time (issue 27).

    One kernel per statistic over every row. Not ``torch.aminmax(dim=1)``: on CPU it is
    ~15x slower than the pair (1.5 ms against 0.09 ms for 8 x 65536 float32, one thread)."""
    parts = [flat.sum(dim=1), row_sumsq(flat)]
    if extremes:
        parts += [flat.amax(dim=1), flat.amin(dim=1)]
    return torch.stack(parts, dim=1)


KEEP_BELOW = 2**20  # bytes: a layer's rows this small are kept without asking ``rereads``


def keep_for_finish(raw: torch.Tensor, flat: torch.Tensor) -> bool:
    """Whether a stack holds this layer's ``flat`` for ``finish_moments``: as ``rereads``
    says, except under ``KEEP_BELOW`` bytes, where it is kept without asking. The test's
    read back and per-row Python cost a width-64 stack 3 % of its time, to save memory a
    stack of such layers barely has (50 layers of 8 x 64 x 64 floats are 6.5 MB); the
    finish still rereads only the layers it must (issue 27)."""
    return flat.numel() * flat.element_size() < KEEP_BELOW or rereads(raw, flat)


def rereads(raw: torch.Tensor, flat: torch.Tensor) -> bool:
    """Whether ``finish_moments`` will read this layer's ``flat`` again, from its
    ``raw_moments``: on CPU only where some row's one-pass variance is unsafe (the probe's
    ``one_pass_safe``, in the same float64 arithmetic as the batched test) or its sum is
    not finite; off the CPU always (reading
    the test back would cost a sync). A layer that needs no reread need not be kept: at
    width 256 the stack's gradients alone are 100 MB of memory first touched per stack."""
    if flat.device.type != "cpu":
        return True
    n = flat.shape[1]
    return any(
        not math.isfinite(row[0]) or not one_pass_safe(row[0] / n, row[1] / n)
        for row in raw.tolist()
    )


def finish_moments(raw: torch.Tensor, flats: Sequence[torch.Tensor | None], n: int) -> torch.Tensor:
    """``(L, S, 4)`` float64 ``[mean, var, max_abs, nonfinite]`` from ``raw_moments`` of L
    layers stacked ``(L, S, k)`` (max_abs NaN unless ``k == 4``), the stacked twin of the
    probe's ``_host_summary``; ``flats[l]`` is layer ``l``'s ``(S, n)`` tensor, read again
    only where the arithmetic needs it (None where ``rereads`` said it will not be).

    The variance is one-pass while ``mean^2 <= E[x^2] / 2`` and its sum of squares is
    finite, else two passes over that layer; max_abs is ``max(amax, -amin)``, exactly the
    probe's ``abs().amax()``; non-finite values are counted only in rows whose sum is not
    finite (always off the CPU, where reading the test back would cost a sync)."""
    raw = raw.double()
    mean = raw[..., 0] / n
    sq = raw[..., 1] / n
    var = sq - mean * mean
    need_two_pass = ~torch.isfinite(sq) | (mean * mean > MOMENT_ONE_PASS_LIMIT * sq)
    finite = torch.isfinite(raw[..., 0])
    nonfinite = torch.zeros_like(mean)
    for layer in _layers(need_two_pass):
        exact = two_pass_var(_kept(flats, layer)).double()
        var[layer] = torch.where(need_two_pass[layer], exact, var[layer])
    for layer in _layers(~finite):
        count = nonfinite_count(_kept(flats, layer))
        nonfinite[layer] = torch.where(finite[layer], torch.zeros_like(count), count)
    max_abs = row_max_abs(raw) if raw.shape[-1] == 4 else torch.full_like(mean, math.nan)
    return torch.stack([mean, var, max_abs, nonfinite], dim=-1)


def row_max_abs(raw: torch.Tensor) -> torch.Tensor:
    """Each row's largest ``|value|`` from its ``raw_moments(..., extremes=True)``:
    ``max(amax, -amin)``, exactly the probe's ``abs().amax()`` (NaN where a row has one)."""
    return torch.maximum(raw[..., 2], -raw[..., 3])


def _kept(flats: Sequence[torch.Tensor | None], layer: int) -> torch.Tensor:
    flat = flats[layer]
    if flat is None:  # ``rereads`` and this function disagree: a bug, not bad input
        raise AssertionError(f"layer {layer}'s tensor was let go but is needed again")
    return flat


def _layers(mask: torch.Tensor) -> list[int]:
    """The layers (rows of an ``(L, S)`` mask) with any cell set; every layer off the CPU."""
    if mask.device.type != "cpu":
        return list(range(mask.shape[0]))
    layers: list[int] = mask.any(dim=1).nonzero()[:, 0].tolist()
    return layers


def nonfinite_count(flat: torch.Tensor) -> torch.Tensor:
    """Non-finite values per row, float64."""
    return (~torch.isfinite(flat)).sum(dim=1).double()


def event_counts(x: torch.Tensor, target: DType) -> torch.Tensor:
    """``(S, 3)`` float64 counts (overflow, subnormal, flush) per network of the stack ``x``
    (shape (S, ...), in its own dtype): the batched ``precision_event_counts``, with the
    same rules for values already in ``target``'s dtype (native)."""
    flat = x.detach().reshape(x.shape[0], -1)
    if flat.dtype == target.dtype:
        mag = flat.abs()
        overflow = torch.isinf(flat).sum(dim=1)
        subnormal = ((mag > 0) & (mag < target.tiny)).sum(dim=1)
        return torch.stack([overflow, subnormal, torch.zeros_like(overflow)], dim=1).double()
    rounded = flat.to(target.dtype)
    rmag = rounded.abs()
    overflow = (torch.isinf(rounded) & torch.isfinite(flat)).sum(dim=1)
    subnormal = ((rmag > 0) & (rmag < target.tiny)).sum(dim=1)
    flush = ((rmag == 0) & (flat != 0)).sum(dim=1)
    return torch.stack([overflow, subnormal, flush], dim=1).double()
