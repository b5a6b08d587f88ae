"""Training-step throughput (forward, projection loss, backward, SGD) across batch sizes."""

from conftest import Case, Measure

from stability.measure.steps import make_train_step


def test_train_step(case: Case, run_step: Measure) -> None:
    """Samples per second of one training step, normalised by the same-run GEMM."""
    result = run_step(make_train_step(case.config(), case.batch))
    assert result.samples_per_s > 0
