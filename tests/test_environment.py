"""One environment description: its facts, and the places that record them."""

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from stability.errors import StabilityError
from stability.measure import baseline as bl
from stability.measure.threads import threads
from stability.report import inputs, runner
from stability.results import environment as env_module
from stability.results.environment import KEYS, environment
from stability.results.store import Store
from stability.sweep.dask_executor import worker_versions

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "baselines" / "baseline.json"


def _old_cpu_model() -> str:
    """measure/baseline.py's own reader before the unification, kept as the oracle."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def test_environment_lists_every_fact_read_directly() -> None:
    env = environment()
    assert tuple(env) == KEYS
    assert env["python"] == platform.python_version()
    assert env["torch"] == torch.__version__
    assert env["numpy"] == np.__version__
    assert (env["system"], env["machine"]) == (platform.system(), platform.machine())
    assert (env["platform"], env["host"]) == (platform.platform(), platform.node())
    assert env["cpu_model"] == _old_cpu_model()
    assert env["cpu_count"] == os.cpu_count()
    assert env["torch_threads"] == torch.get_num_threads()
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    assert env["cuda_devices"] == (names if torch.cuda.is_available() else [])
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # a source tarball has no commit to compare
        assert environment(["git_commit"], cwd=ROOT)["git_commit"].startswith(head.stdout.strip())


def test_torch_threads_is_read_when_asked() -> None:
    with threads(1):
        assert environment(["torch_threads"]) == {"torch_threads": 1}


def test_git_commit_is_none_outside_a_checkout(tmp_path: Path) -> None:
    assert environment(["git_commit"], cwd=tmp_path) == {"git_commit": None}


def test_keys_select_and_order_the_facts() -> None:
    assert list(environment(("torch", "python"))) == ["torch", "python"]


def test_unknown_key_names_the_valid_ones() -> None:
    with pytest.raises(StabilityError, match=r"unknown environment key 'gpu'; expected one of \["):
        environment(["torch", "gpu"])


def test_facts_not_asked_for_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """No git subprocess and no CUDA probe unless asked: the store and a forking pool rely
    on it (initialising CUDA before fork breaks CUDA workers)."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("read although not asked for")

    monkeypatch.setattr(subprocess, "run", forbidden)
    monkeypatch.setattr(torch.cuda, "is_available", forbidden)
    cheap = [k for k in KEYS if k not in ("git_commit", "cuda_devices")]
    assert list(environment(cheap)) == cheap
    for costly in ("git_commit", "cuda_devices"):  # witness: asking does read them
        with pytest.raises(AssertionError, match="not asked for"):
            environment([costly])


class _CountingPath:
    """Stands in for ``Path`` inside the environment module: counts cpuinfo reads."""

    reads = 0
    text: str | None = "processor\t: 0\nmodel name\t: Test CPU 9000\n"

    def __init__(self, path: str) -> None:
        assert path == "/proc/cpuinfo"

    def read_text(self) -> str:
        type(self).reads += 1
        if self.text is None:
            raise OSError("no /proc here")
        return self.text


@pytest.fixture
def fake_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(env_module, "Path", _CountingPath)
    monkeypatch.setattr(_CountingPath, "reads", 0)
    env_module.cpu_model.cache_clear()
    yield _CountingPath
    env_module.cpu_model.cache_clear()  # the next caller reads the real machine again


def test_cpu_model_is_read_once_for_every_consumer(fake_cpuinfo: Any) -> None:
    assert environment(["cpu_model"]) == {"cpu_model": "Test CPU 9000"}
    assert bl.fingerprint()["cpu_model"] == "Test CPU 9000"
    assert inputs.environment_facts()["CPU"] == "Test CPU 9000"
    assert fake_cpuinfo.reads == 1


@pytest.mark.parametrize(
    ("processor", "expected"),
    [pytest.param("arm", "arm", id="processor"), pytest.param("", "unknown", id="nothing")],
)
def test_cpu_model_without_proc_cpuinfo(
    fake_cpuinfo: Any, monkeypatch: pytest.MonkeyPatch, processor: str, expected: str
) -> None:
    monkeypatch.setattr(fake_cpuinfo, "text", None)
    monkeypatch.setattr(platform, "processor", lambda: processor)
    assert environment(["cpu_model"])["cpu_model"] == expected


# -- the places that record the environment --------------------------------------------------
def test_baseline_fingerprint_keeps_the_committed_keys_and_old_values() -> None:
    """Committed baselines compare by these keys and values: neither may drift."""
    committed = json.loads(COMMITTED.read_text())["environment"]
    now = bl.fingerprint()
    assert list(now) == list(committed)  # same keys, same order
    assert {k: type(v) for k, v in now.items()} == {k: type(v) for k, v in committed.items()}
    before = {  # the formula before the unification, spelled out
        "python": ".".join(platform.python_version_tuple()[:2]),
        "torch": torch.__version__,
        "system": platform.system(),
        "machine": platform.machine(),
        "cpu_model": _old_cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": bl.THREADS,
    }
    assert now == before


def test_report_cache_fingerprint_is_unchanged() -> None:
    """The runner's cache key still hashes the same facts: old caches stay valid."""

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    old = {
        "code": "abc",
        "kind": "bench",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        **{d: version(d) for d in ("hypothesis", "pytest", "pytest-benchmark")},
        "quick": True,
    }
    digest = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()
    assert runner.fingerprint("abc", "bench", {"quick": True}) == digest


def test_report_environment_facts_come_from_environment() -> None:
    env = environment()
    facts = inputs.environment_facts()
    assert facts["torch version"] == env["torch"] and facts["python"] == env["python"]
    assert facts["CPU"] == env["cpu_model"]
    assert facts["CPU cores (os.cpu_count)"] == str(env["cpu_count"])
    assert facts["torch threads"] == str(env["torch_threads"])
    assert facts["GPU"] == (", ".join(env["cuda_devices"]) or "none (CUDA not available)")
    assert facts["platform"] == env["platform"]


def test_store_run_records_commit_torch_and_host(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        store.start_run("sweep", ["stability", "sweep"])
        run = store.runs().iloc[0]
    env = environment(["git_commit", "torch", "host"])
    assert (run["git_commit"], run["torch_version"], run["host"]) == (
        env["git_commit"],
        env["torch"],
        env["host"],
    )


def test_dask_worker_versions_are_stability_and_torch() -> None:
    installed = environment(["stability"])["stability"]
    assert worker_versions() == {"stability": installed, "torch": torch.__version__}
