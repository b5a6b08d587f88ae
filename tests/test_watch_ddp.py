"""``watch`` under DistributedDataParallel: 2 CPU processes on gloo, started here.

Statistics are reduced across ranks (``ranks="reduce"``: both ranks hold the same rows) or
kept per rank (``"each"``: each rank its own data, so its own rows); a non-finite forward
planted on rank 1 at step 3 stops both ranks with the same attribution. Every wait is
bounded: the process group's timeout (30 s), and the join below; a rank still alive at the
deadline is killed and the test fails, rather than hanging CI. No signal is sent: the only
way a child is ended early is SIGKILL, which no handler (or ignored SIGINT) can change.
"""

import json
import socket
import time
from pathlib import Path
from typing import Any

import ddp_watch_worker as worker
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

WORLD = 2
DEADLINE_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spawn(tmp_path: Path) -> None:
    args = (WORLD, free_port(), str(tmp_path))
    ctx = mp.start_processes(worker.run, args=args, nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"DDP ranks still running after {DEADLINE_S} s: a hang")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join(5)


def seen(path: Path) -> list[dict[str, Any]]:
    return [json.loads((path / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_reduce_and_each_and_one_alarm_for_all(tmp_path: Path) -> None:
    spawn(tmp_path)
    reduced = seen(tmp_path / "reduce")
    errors = [r["error"] for r in reduced]
    assert errors[0] is not None and errors[0] == errors[1]  # the same attribution
    assert f"step {worker.BAD_STEP}: 0 (forward)" in errors[0]
    assert "operator mul" in errors[0] and f"on rank {worker.BAD_RANK}" in errors[0]
    assert [r["step"] for r in reduced] == [worker.BAD_STEP] * WORLD
    assert reduced[0]["frame"] == reduced[1]["frame"]  # reduced: identical rows
    assert sorted(set(reduced[0]["frame"]["step"])) == [0, 2]

    each = seen(tmp_path / "each")
    assert [r["error"] for r in each] == [None, None]
    frames = [r["frame"] for r in each]
    assert frames[0]["stat"] == frames[1]["stat"] and frames[0]["value"] != frames[1]["value"]
    assert sorted(set(frames[0]["step"])) == [0, 2, 4]
