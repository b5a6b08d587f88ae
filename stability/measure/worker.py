"""The measuring process of ``stability gate --against``: ``python -m stability.measure.worker
worker`` times the training step in its own tree's code.

Line protocol (the other side may be an older revision, so it does not change): a request
``{"config": {...}, "batch": B, "rounds": R, "threads": T}`` in, one JSON line out,
``{"seconds": [...R per-call seconds], "iterations": N, "nonfinite": K}``. The first request
builds, warms up and sizes the step; every later one reuses it, so all blocks are alike.
"""

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from stability.core.config import MLPConfig
from stability.errors import StabilityError
from stability.measure.steps import TrainStep, make_train_step
from stability.measure.threads import threads
from stability.measure.timer import Timer


def worker(stdin: Iterable[str] = sys.stdin, stdout: Any = sys.stdout) -> int:
    """Answer every request line until stdin closes."""
    step: TrainStep | None = None
    timer: Timer | None = None
    for line in stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        with threads(req.get("threads")):
            if step is None or timer is None:
                step = make_train_step(MLPConfig(**req["config"]), int(req["batch"]))
                timer = Timer(step, step.device)
            seconds = timer.samples(int(req["rounds"]))
        reply = {"seconds": seconds, "iterations": timer.iterations, "nonfinite": step.nonfinite()}
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()
    return 0


def main(argv: Sequence[str], module: str = "stability.measure.worker") -> int:
    if list(argv) == ["worker"]:
        try:
            return worker()
        except StabilityError as exc:  # e.g. a bad STABILITY_PLANT_SLOWDOWN: one line, no trace
            print(f"{module}: error: {exc}", file=sys.stderr)
            return 2
    print(f"usage: python -m {module} worker", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
