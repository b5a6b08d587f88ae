"""The pytest plugin: fixtures, ``--stability-report DIR``, the float16 marker, the entry point.

Each test runs pytest on a small user test file through ``pytester`` (in process), loading
the plugin with ``-p`` as an uninstalled checkout must (entry points come from installed
metadata) and ``-p no:randomly`` (the outer run's plugins are not the user's); a separate
test checks that pyproject declares the ``pytest11`` entry point.
"""

import json
import tomllib
from pathlib import Path

import pytest

# Imported here, before pytester's runs: pytester restores sys.modules after each in-process
# run, and torch's C extension cannot be imported a second time in one process (segfault).
import stability.integrations.pytest_report  # noqa: F401

pytest_plugins = ["pytester"]

PLUGIN = "stability.integrations.pytest_plugin"


def installed() -> bool:
    """Is the pytest11 entry point in the installed metadata (``pip install -e .``, as nox
    does)? Then pytest loads the plugin by itself, and ``-p`` would register it twice."""
    from importlib.metadata import entry_points

    return any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))


FLAGS = ("-p", "no:randomly") if installed() else ("-p", PLUGIN, "-p", "no:randomly")
ROOT = Path(__file__).resolve().parents[1]
USER_TESTS = """
import pytest, torch
from torch import nn

def model(scale=1.0):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16))
    with torch.no_grad():
        m[2].weight.mul_(scale)
    return m

def test_fine(stability_check, stability_dtype):
    assert stability_dtype is None
    stability_check.variance_preserved(model(), torch.randn(64, 8), band=(-2, 2))

@pytest.mark.stability_float16
def test_overflows_in_float16(stability_check, stability_dtype):
    assert stability_dtype == "float16"
    stability_check.gradients_finite(model(1e4), torch.randn(64, 8) * 100)

def test_same_model_float32(stability_check):
    stability_check.gradients_finite(model(1e4), torch.randn(64, 8) * 100)
"""


def test_fixtures_marker_and_report(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    out = tmp_path / "report"
    result = pytester.runpytest(*FLAGS, "--stability-report", str(out), "-q")
    # float16 emulation turns the 1e4-scaled layer's ~1e6 outputs into inf; float32 holds them.
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*stability: probed layers written to*stability_probed.csv*"])
    result.stdout.fnmatch_lines(["*_ test_overflows_in_float16 _*", "*non-finite forward values*"])
    rows = json.loads((out / "stability_probed.json").read_text())["rows"]
    by_test = {r["test"].split("::")[-1] for r in rows}
    assert by_test == {"test_fine", "test_overflows_in_float16", "test_same_model_float32"}
    f16 = [r for r in rows if r["test"].endswith("test_overflows_in_float16")]
    assert {r["dtype"] for r in f16} == {"float16"} and {r["outcome"] for r in f16} == {"failed"}
    assert [r["module"] for r in f16] == ["0", "2"]  # qualified names of the probed layers
    assert (out / "stability_probed.csv").read_text().startswith("test,check,dtype,layer,module")
    page = (out / "stability_probed.html").read_text()
    assert "3 tests probed, 1 with a failed stability check" in page


def test_without_the_option_nothing_is_written(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest(*FLAGS, "-q", "-k", "fine")
    result.assert_outcomes(passed=1)
    assert not list(pytester.path.rglob("stability_probed*"))


def test_unwritable_report_folder_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    blocker = pytester.path / "file"
    blocker.write_text("not a folder")
    result = pytester.runpytest(*FLAGS, "--stability-report", str(blocker), "-q")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--stability-report file*not writable*"])


def test_the_entry_point_loads_the_plugin(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed distribution declaring the entry point (made here) is all pytest needs."""
    dist = tmp_path / "site" / "stability_entry-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: stability-entry\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(f"[pytest11]\nstability = {PLUGIN}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-p", "no:randomly", "-q", "-k", "fine")
    result.assert_outcomes(passed=1)  # the stability_check fixture was found


def test_pyproject_declares_the_entry_point() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["pytest11"] == {"stability": PLUGIN}


def test_documented_example_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_example=(ROOT / "examples" / "test_with_plugin.py").read_text())
    result = pytester.runpytest(*FLAGS, "-q")
    result.assert_outcomes(passed=3)
