"""Forward-only throughput (eval mode, ``torch.no_grad``) across batch sizes."""

from conftest import Case, Measure

from stability.measure.steps import make_forward_step


def test_forward(case: Case, run_step: Measure) -> None:
    """Samples per second of one inference pass, normalised by the same-run GEMM."""
    result = run_step(make_forward_step(case.config(), case.batch))
    assert result.samples_per_s > 0
