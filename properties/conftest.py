"""Hypothesis profiles for the property suite; pick one with ``--hypothesis-profile``.

Torch calls have variable latency (first-call dispatch, allocator warm-up), so every profile
disables the per-example deadline rather than flaking on a slow first example.
"""

import os
from collections.abc import Iterator

import pytest
import torch
from hypothesis import HealthCheck, settings

from stability.measure.threads import threads

# dev: quick feedback while editing; few examples, random seed each run.
settings.register_profile("dev", max_examples=10, deadline=None)
# ci: the default in .ci/run and nox; derandomized so a CI run is reproducible bit for bit,
# enough examples to hit edge cases, and the too_slow check off since torch setup is slow.
settings.register_profile(
    "ci",
    max_examples=30,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# ci-random: the ci settings with a fresh random seed per run, for hunting flakes
# (scripts/flake_hunt.sh runs the suite 20 times with different --hypothesis-seed).
settings.register_profile(
    "ci-random",
    max_examples=30,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# thorough: before a release or after touching numerics; many examples, random seeds.
settings.register_profile(
    "thorough", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    """Every example starts from the same global RNG state and thread count."""
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module of small float64 work, restored afterwards."""
    with threads(1):
        yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``cuda``-marked properties cleanly where no GPU is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is available here")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
