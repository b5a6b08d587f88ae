"""One rank of the DDP watch test (``test_watch_ddp``): started by ``torch.multiprocessing``
in a fresh interpreter, so it lives in a module of its own that imports little."""

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

BAD_STEP = 3
BAD_RANK = 1
STEPS = 6


def run(rank: int, world: int, port: int, out: str) -> None:
    """Train a tiny MLP under DDP and ``watch`` twice (``ranks="each"``, clean; then
    ``"reduce"`` with the planted overflow); write what this rank saw under ``out``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=30))
    try:
        _train(rank, str(Path(out, "each")), "each", plant=False)
        _train(rank, str(Path(out, "reduce")), "reduce", plant=True)
    finally:
        dist.destroy_process_group()


def _train(rank: int, out: str, ranks: str, plant: bool) -> None:
    import stability
    from stability.integrations.watch import NonFiniteError

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    ddp = nn.parallel.DistributedDataParallel(model)
    step = [0]
    if plant:
        model[0].register_forward_hook(
            lambda m, a, o: o * float("inf") if step[0] == BAD_STEP and rank == BAD_RANK else None
        )
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    seen: dict[str, Any] = {"rank": rank, "error": None}
    try:
        with stability.watch(ddp, every=2, ranks=ranks) as w:
            for step[0] in range(STEPS):
                opt.zero_grad()
                ddp(torch.randn(4, 8, generator=gen)).pow(2).mean().backward()
                opt.step()
    except NonFiniteError as err:
        seen["error"] = str(err)
        seen["step"] = err.step
    seen["frame"] = w.to_frame().to_dict(orient="list")
    Path(out).mkdir(parents=True, exist_ok=True)
    Path(out, f"rank{rank}.json").write_text(json.dumps(seen), encoding="utf-8")
