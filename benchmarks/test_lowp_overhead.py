"""The cost of emulating one low-precision format on a probe pass (issue 24).

The goal: a probe pass of the transformer example with one format (E4M3, per-tensor
scaling) emulated on every matmul module (``probe_formats``: its own forward and backward,
the float64 reference and quantised GEMMs, the events) takes at most 3x the plain probe
pass (``probe_modules``). The ratio
comes from interleaved blocks timed in the same test (DESIGN.md: timing on a shared machine
is noisy); the ratio and the goal go into ``extra_info`` and a missed goal fails.
"""

from collections.abc import Callable

import torch

from examples import transformer
from stability.core.lowp.formats import get_format
from stability.core.lowp.recipes import get_recipe
from stability.measure.interleave import interleaved_ratio
from stability.usermodel.lowp_probe import probe_formats
from stability.usermodel.probe import probe_modules

ROUNDS = 7
BATCH = 4  # transformer.make_batch: 4 sequences of 16 tokens
GOAL = 3.0  # emulated pass time over the plain probe pass, at most


def _passes() -> tuple[Callable[[], object], Callable[[], object]]:
    torch.manual_seed(0)
    model = transformer.build().eval()
    x, y = transformer.make_batch()
    loss = torch.nn.CrossEntropyLoss()

    def forward() -> torch.Tensor:
        out: torch.Tensor = model(x)
        return out

    def loss_of(out: torch.Tensor) -> torch.Tensor:
        return loss(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    fmt, recipe = [get_format("e4m3")], [get_recipe("tensor")]
    probe_formats(model, forward, loss_of, fmt, recipe)  # warm the theory's cache

    def plain() -> object:
        return probe_modules(model, forward, loss_of)

    def emulated() -> object:
        return probe_modules(model, forward, loss_of), probe_formats(
            model, forward, loss_of, fmt, recipe
        )

    return plain, emulated


def test_lowp_overhead(benchmark: object) -> None:
    """A probe pass with E4M3 tensor scaling emulated per matmul module, over the plain one."""
    plain, emulated = _passes()
    ratio, base, with_lowp = interleaved_ratio(plain, emulated, "cpu", ROUNDS)
    benchmark.extra_info.update({  # type: ignore[attr-defined]
        "lowp_ratio": ratio, "lowp_goal": GOAL, "goal_met": ratio <= GOAL,
        "plain_median_s": base.median, "emulated_median_s": with_lowp.median,
        "rounds": ROUNDS, "batch_size": BATCH, "samples_per_s": BATCH / with_lowp.median,
        "device": "cpu", "dtype": "float32",
    })  # fmt: skip
    benchmark.pedantic(emulated, rounds=1, iterations=1)  # type: ignore[attr-defined]
    assert ratio <= GOAL, f"emulating e4m3 costs {ratio:.2f}x the plain probe pass, goal {GOAL}x"
