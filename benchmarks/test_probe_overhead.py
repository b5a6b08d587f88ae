"""The probe's own cost: the training step with and without ``Probe`` attached.

The goal (issue 4): at depth 16, width 512, batch 256 on CPU float32 the probed step takes
at most 1.10x the plain one. Two separately timed medians on a shared machine differ by
tens of percent, so the ratio in ``extra_info`` comes from interleaved blocks (plain,
probed, plain, ...) timed inside the same test.
"""

import pytest
from conftest import Measure

from stability.core.config import MLPConfig
from stability.measure.bench import interleaved_ratio, make_train_step

CONFIG = MLPConfig(depth=16, width=512, dtype="float32", device="cpu")
BATCH = 256
RATIO_ROUNDS = 15


@pytest.mark.parametrize("every", [None, 1, 10], ids=["no-probe", "every-1", "every-10"])
def test_probe_overhead(every: int | None, run_step: Measure, benchmark: object) -> None:
    """Training-step throughput with the probe recording every ``every``-th step (or none)."""
    result = run_step(make_train_step(CONFIG, BATCH, probe_every=every))
    assert result.nonfinite_losses == 0
    if every is not None:
        plain = make_train_step(CONFIG, BATCH)
        probed = make_train_step(CONFIG, BATCH, probe_every=every)
        ratio, base, with_probe = interleaved_ratio(plain, probed, "cpu", RATIO_ROUNDS)
        probed.close()
        benchmark.extra_info.update(  # type: ignore[attr-defined]
            {
                "overhead_ratio": ratio,
                "overhead_plain_median_s": base.median,
                "overhead_probed_median_s": with_probe.median,
                "overhead_rounds": RATIO_ROUNDS,
            }
        )
