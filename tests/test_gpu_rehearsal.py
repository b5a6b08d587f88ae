"""The GPU run, rehearsed on the CPU: ``scripts/gpu_checks.py --rehearse`` (issue 27).

A GPU is lent to some sessions only, for 15 minutes. Before this rehearsal existed, the
script had never run: it would have spent the first GPU run on two spurious failures (the
coordinate check's ``checks()`` took no device, and the HF checks could not import
``examples`` when the script was started as its docstring says). Here every command, every
check function and every script's ``checks`` runs on the CPU at small sizes, and the CUDA
commands' own arguments are parsed by the real parser.
"""

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest

from stability.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_checks.py"


def gpu_checks() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_checks", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    results = tmp_path_factory.mktemp("rehearsal")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rehearse", "--results", str(results)],
        cwd=results,  # not the repository: the script must find its own way there
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr, results


def test_the_rehearsal_runs_every_check(rehearsal: tuple[int, str, Path]) -> None:
    code, out, results = rehearsal
    assert code == 0, out[-4000:]
    assert " raised " not in out and "FAILED" not in out, out[-4000:]
    summary = {line.rsplit(": ", 1)[0] for line in out.splitlines() if line.endswith(": ok")}
    module = gpu_checks()
    expected = set(module.plan("cpu", False, True, results)) | {
        "cuda vectorised sweep (>= 20x per cell)",
        "cuda Jacobian spectrum (= CPU)",
        "ingest",
    }
    assert expected <= summary, expected - summary
    for prefix in ("hf gpt2", "lowp e4m3", "coord-check", "sweep stacked"):  # one per script
        assert any(name.startswith(prefix) for name in summary), (prefix, sorted(summary))
    assert (results / "gpu_bench.json").stat().st_size > 0  # the benchmarks wrote their JSON
    assert "samples/s" in out  # and its table was printed


def test_the_cuda_commands_parse() -> None:
    """The argv the GPU run will use, ``--device cuda`` and all, as the CLI parses it."""
    plan = gpu_checks().plan("cuda", False, False, Path("results"))
    parsed = 0
    for cmd in plan.values():
        if cmd[1:3] == ["-m", "stability.cli"]:
            args = build_parser(cmd[3:]).parse_args(cmd[3:])
            assert args.device == "cuda"
            parsed += 1
    assert parsed == 2
    assert plan["cuda benchmarks"][3:6] == ["benchmarks", "-m", "cuda"]


def fake_script(checks: object) -> types.ModuleType:
    module = types.ModuleType("fake_gpu_script")
    module.checks = checks  # type: ignore[attr-defined]
    return module


def test_a_script_whose_checks_take_no_device_fails_the_rehearsal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The witness: the coordinate check's old ``checks()`` fails even where nothing is
    judged, and a script whose checks run counts as run."""
    module = gpu_checks()
    monkeypatch.setattr(module, "SCRIPTS", ("fake_gpu_script",))
    monkeypatch.setitem(sys.modules, "fake_gpu_script", fake_script(lambda: []))
    assert module._script_checks("cpu", rehearse=True) == {"fake_gpu_script": 1}
    runs = fake_script(lambda device, rehearse=False: [(f"x {device}", False, "slow")])
    monkeypatch.setitem(sys.modules, "fake_gpu_script", runs)
    assert module._script_checks("cpu", rehearse=True) == {"x cpu": 0}
    assert module._script_checks("cuda", rehearse=False) == {"x cuda": 1}


def test_a_check_that_raises_fails_even_unjudged() -> None:
    module = gpu_checks()

    def broken() -> tuple[bool, str]:
        raise RuntimeError("no such kernel")

    assert module._guarded("broken", broken, rehearse=True) == 1
    assert module._guarded("slow", lambda: (False, "3x"), rehearse=True) == 0
    assert module._guarded("slow", lambda: (False, "3x"), rehearse=False) == 1
