"""A benchmark missing the fields the store needs fails where it runs, not in the report."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = """
def test_forgets_batch_size(benchmark):
    benchmark(lambda: 1)
    benchmark.extra_info.update(samples_per_s=1.0, device="cpu", dtype="float32")

def test_attaches_everything(benchmark):
    benchmark(lambda: 1)
    benchmark.extra_info.update(batch_size=1, samples_per_s=1.0, device="cpu", dtype="float32")
"""


def test_a_benchmark_the_store_would_refuse_fails_at_once(tmp_path: Path) -> None:
    shutil.copy(ROOT / "benchmarks" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_fields.py").write_text(BENCHMARKS)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         "--benchmark-min-rounds=1", "--benchmark-max-time=0.01", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 passed, 1 error" in run.stdout, run.stdout  # the call passes, its teardown fails
    assert "test_forgets_batch_size" in run.stdout and "'batch_size'" in run.stdout
