"""The probe's own cost: the training step with and without ``Probe`` attached.

The goal (issue 4): at depth 16, width 512, batch 256 on CPU float32 the probed step takes
at most 1.10x the plain one. Two separately timed medians on a shared machine differ by
tens of percent, so the ratio comes from interleaved blocks (plain, probed, probed, plain,
...) timed inside the same test. The ratio, the goal and whether it was met go into
``extra_info``, and a missed goal fails the benchmark.

"Missed" is decided by a test, not by the median alone: the measured overhead sits near
the goal (1.06-1.15 across runs on a shared 2-core machine), so a bare ``ratio <= 1.10``
would flip on noise. The goal counts as missed when the probed rounds are significantly
slower than the plain ones scaled by the goal (one-sided Mann-Whitney, p < ``ALPHA``).
"""

import pytest
from conftest import Measure

from stability.core.config import MLPConfig
from stability.measure.interleave import interleaved_ratio
from stability.measure.stats import meets_goal
from stability.measure.steps import make_train_step

CONFIG = MLPConfig(depth=16, width=512, dtype="float32", device="cpu")
BATCH = 256
RATIO_ROUNDS = 15
OVERHEAD_GOAL = 1.10  # probed step time over plain step time, at most


@pytest.mark.parametrize("every", [None, 1, 10], ids=["no-probe", "every-1", "every-10"])
def test_probe_overhead(every: int | None, run_step: Measure, benchmark: object) -> None:
    """Training-step throughput with the probe recording every ``every``-th step (or none)."""
    result = run_step(make_train_step(CONFIG, BATCH, probe_every=every))
    assert result.nonfinite_losses == 0
    if every is None:
        return
    plain = make_train_step(CONFIG, BATCH)
    probed = make_train_step(CONFIG, BATCH, probe_every=every)
    ratio, base, with_probe = interleaved_ratio(plain, probed, "cpu", RATIO_ROUNDS)
    probed.close()
    met, p_over = meets_goal(with_probe.samples, base.samples, OVERHEAD_GOAL)
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        {
            "overhead_ratio": ratio,
            "overhead_goal": OVERHEAD_GOAL,
            "goal_met": met,
            "overhead_p_over_goal": p_over,
            "overhead_plain_median_s": base.median,
            "overhead_probed_median_s": with_probe.median,
            "overhead_rounds": RATIO_ROUNDS,
            "ratio_plain_seconds": list(base.samples),
            "ratio_probed_seconds": list(with_probe.samples),
        }
    )
    assert met, (
        f"probe every {every}: the probed step takes {ratio:.3f}x the plain one, "
        f"goal <= {OVERHEAD_GOAL:.2f}x (over it with p={p_over:.2g})"
    )
