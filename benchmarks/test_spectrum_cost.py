"""The Jacobian spectrum's cost against one probe pass (issue 17's speed goal).

Goal: the spectrum of a depth-50, width-256 MLP on a batch of 32 (the input-output
Jacobian, ``method="auto"``: stochastic Lanczos at this width) costs at most 20x one probe
pass (forward and backward with the statistics hooks) of the same network on the same
batch. Both are timed in interleaved blocks inside this one test, so the ratio holds on any
machine; the ratio and the goal go into ``extra_info``, and a missed goal fails.
"""

import pytest

from stability.core.config import MLPConfig
from stability.core.jacobian import spectrum
from stability.core.model import build_mlp, input_batch
from stability.core.probe import probe
from stability.measure.interleave import interleaved_ratio
from stability.measure.stats import meets_goal
from stability.measure.threads import threads

CONFIG = MLPConfig(depth=50, width=256, dtype="float32", device="cpu")
BATCH = 32
ROUNDS = 5
GOAL = 20.0  # spectrum time over probe-pass time, at most


@pytest.mark.parametrize("device", ["cpu"])
def test_spectrum_cost(device: str, benchmark: object) -> None:
    model = build_mlp(CONFIG)
    x = input_batch(CONFIG, BATCH)

    def probe_pass() -> None:
        probe(model, x)

    def spectrum_pass() -> None:
        spectrum(model, x)

    with threads(1):
        ratio, base, spec = interleaved_ratio(probe_pass, spectrum_pass, device, ROUNDS)
    met, p_over = meets_goal(spec.samples, base.samples, GOAL)
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        {
            # The fields every stored benchmark row carries (measure/bench_schema.py): a
            # "sample" here is one input of the batch whose Jacobian spectrum was taken.
            "kind": "spectrum cost",
            "batch_size": BATCH,
            "samples_per_s": BATCH / spec.median,
            "device": device,
            "dtype": CONFIG.dtype,
            "median_s": spec.median,
            "spectrum_over_probe": ratio,
            "goal": GOAL,
            "goal_met": met,
            "p_over_goal": p_over,
            "probe_median_s": base.median,
            "spectrum_median_s": spec.median,
            "rounds": ROUNDS,
        }
    )
    benchmark.pedantic(spectrum_pass, rounds=1, iterations=1)  # type: ignore[attr-defined]
    assert met, f"spectrum takes {ratio:.1f}x a probe pass, goal <= {GOAL:g}x (p={p_over:.2g})"
