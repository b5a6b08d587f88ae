"""``watch`` under ``torch.distributed`` (DDP): statistics per rank or reduced, and one alarm.

- ``ranks="reduce"``: each recorded step's statistics are combined across ranks (the mean of
  means and variances, the max of ``act_max_abs``, the sum of ``nonfinite``), so every rank
  holds, logs and reports the same rows; ``ranks="each"``: every rank keeps its own.
- Every step, after the backward and before the optimizer's step, one all-reduce tells
  every rank whether any rank saw a non-finite value; if one did, the lowest such rank's
  attribution is broadcast and every rank raises (or warns) with it. A rank that raised
  alone would leave the others waiting in the next collective until the timeout.

The collectives run on a group of their own (gloo, CPU tensors, ``timeout``), made when the
watch starts, so they never interleave with DDP's gradient buckets; every wait is bounded.
"""

from dataclasses import replace
from datetime import timedelta
from typing import Any

import torch

from stability.core.probe import LayerStats
from stability.errors import StabilityError
from stability.integrations.scalars import Rows

RANKS = ("reduce", "each")
TIMEOUT = timedelta(seconds=60)
_MAX = ("act_max_abs",)
_SUM = ("nonfinite",)


class RankSync:
    """The watch's collectives on its own process group."""

    def __init__(self, ranks: str, timeout: timedelta = TIMEOUT) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.ranks = ranks
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.group = dist.new_group(backend="gloo", timeout=timeout)
        self.agreed: Any = None  # the Event every rank acted on, once one did

    @classmethod
    def create(cls, ranks: str) -> "RankSync | None":
        """A sync when torch.distributed is initialised with more than one rank, else None."""
        if ranks not in RANKS:
            raise StabilityError(f"unknown ranks {ranks!r}; valid choices: {list(RANKS)}")
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        return cls(ranks)

    def agree(self, bad: bool, event: Any) -> Any:
        """None if no rank was non-finite in this step; else the event every rank acts on: a
        forward one before a backward one (a non-finite forward on one rank makes every
        rank's gradients non-finite once DDP averages them), then the lowest rank's."""
        phase = 0 if bad and event.attribution.phase == "forward" else 1
        key = (phase * self.world + self.rank) if bad else 2 * self.world
        flag = torch.tensor([key], dtype=torch.int64)
        self.dist.all_reduce(flag, op=self.dist.ReduceOp.MIN, group=self.group)
        if int(flag.item()) == 2 * self.world:
            return None
        src = int(flag.item()) % self.world
        if self.rank == src:
            where = replace(event.attribution, detail=_on_rank(event.attribution.detail, src))
            event = replace(event, attribution=where)
        box = [event if self.rank == src else None]
        self.dist.broadcast_object_list(box, src=src, group=self.group)
        return box[0]

    def reduce(self, rows: Rows) -> list[tuple[str, LayerStats]]:
        """``ranks="reduce"``: the rows combined across ranks (same modules on every rank)."""
        rows = list(rows)
        if self.ranks == "each" or not rows:
            return rows
        fields = [f for f in LayerStats.columns() if f != "layer"]
        table = torch.tensor(
            [[float(getattr(st, f)) for f in fields] for _, st in rows], dtype=torch.float64
        )  # (modules, fields)
        maxed = [i for i, f in enumerate(fields) if f in _MAX]
        summed = [i for i, f in enumerate(fields) if f in _SUM]
        total = table.clone()
        self.dist.all_reduce(total, group=self.group)
        mean = total / self.world
        mean[:, summed] = total[:, summed]
        if maxed:
            peak = table[:, maxed].contiguous()
            self.dist.all_reduce(peak, op=self.dist.ReduceOp.MAX, group=self.group)
            mean[:, maxed] = peak
        out = []
        for (name, st), values in zip(rows, mean.tolist(), strict=True):
            kept = {f: (type(getattr(st, f))(v)) for f, v in zip(fields, values, strict=True)}
            out.append((name, replace(st, **kept)))
        return out


def _on_rank(detail: str, rank: int) -> str:
    return f"{detail}; on rank {rank}" if detail else f"on rank {rank}"
