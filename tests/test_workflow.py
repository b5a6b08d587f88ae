"""The GitHub Actions workflow users copy: actionlint accepts it, and it does what docs/ci.md says.

actionlint comes with the test extra (a package that installs an ``actionlint`` executable
into the environment's bin directory). Without it these tests fail rather than skip: a
workflow nobody lints is a workflow that breaks on its first real run. The witness tests plant
an error in a copy of the workflow and require actionlint to report it, so a lint that can
never fail (a stub binary, a wrong path) does not pass for a clean one.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "stability.yml"
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"


def actionlint() -> str:
    """The actionlint beside this interpreter (the venv's bin), else the one on PATH."""
    found = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which(
        "actionlint"
    )
    if found is None:
        pytest.fail(
            "actionlint is not installed: install the test extra (pip install -e '.[test]'), "
            "which provides the actionlint executable"
        )
    return found


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [actionlint(), "-no-color", "-oneline", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def content_lines(text: str) -> list[str]:
    """The workflow's lines without blank lines and comment lines."""
    return [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def steps(text: str) -> list[dict[str, str]]:
    """The job's steps as {key: value}; a nested block (``with:``, ``env:``) is its lines joined.

    Enough YAML for this one file, which the project writes itself (no YAML parser needed).
    """
    lines = content_lines(text)
    start = next(i for i, line in enumerate(lines) if line.strip() == "steps:")
    out: list[dict[str, str]] = []
    step_indent = -1
    key = ""
    for line in lines[start + 1 :]:
        indent = len(line) - len(line.lstrip())
        item = re.match(r"^( *)- (.*)$", line)
        if step_indent < 0:
            assert item, f"steps: must be a list, got {line!r}"
            step_indent = len(item.group(1))
        if indent < step_indent:
            break
        if item and len(item.group(1)) == step_indent:
            out.append({})
            line, indent = item.group(2), step_indent + 2
        if indent == step_indent + 2:
            key, _, value = line.strip().partition(":")
            out[-1][key] = value.strip()
        else:
            out[-1][key] += "\n" + line.strip()
    return out


def step(text: str, predicate_key: str, contains: str) -> dict[str, str]:
    matches = [s for s in steps(text) if contains in s.get(predicate_key, "")]
    assert len(matches) == 1, f"expected one step whose {predicate_key} has {contains!r}"
    return matches[0]


@pytest.fixture(scope="module")
def workflow() -> str:
    return WORKFLOW.read_text()


def test_actionlint_accepts_the_workflow() -> None:
    result = lint(WORKFLOW)
    assert result.returncode == 0, f"actionlint:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize(
    ("original", "planted", "reported"),
    [
        # a typo in a job key: unknown key, and the job lacks runs-on
        ("    runs-on: ubuntu-latest", "    runs_on: ubuntu-latest", "runs_on"),
        # an invalid expression: a status function that does not exist
        ("${{ !cancelled() }}", "${{ !canceled() }}", "canceled"),
    ],
    ids=["key-typo", "bad-expression"],
)
def test_witness_actionlint_fails_on_a_planted_error(
    workflow: str, tmp_path: Path, original: str, planted: str, reported: str
) -> None:
    assert workflow.count(original) == 1, f"the witness needs {original!r} once in the workflow"
    broken = tmp_path / "stability.yml"
    broken.write_text(workflow.replace(original, planted))
    result = lint(broken)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"actionlint passed a workflow with {planted!r}:\n{output}"
    assert reported in output, f"actionlint failed, but not on the planted {planted!r}:\n{output}"


def test_checkout_fetches_full_history_for_the_gate(workflow: str) -> None:
    checkout = step(workflow, "uses", "actions/checkout@")
    assert "fetch-depth: 0" in checkout.get("with", "").splitlines()


def test_python_3_11_with_pip_cache_keyed_on_pyproject(workflow: str) -> None:
    setup = step(workflow, "uses", "actions/setup-python@").get("with", "").splitlines()
    assert 'python-version: "3.11"' in setup
    assert "cache: pip" in setup
    assert "cache-dependency-path: pyproject.toml" in setup


def test_torch_is_the_cpu_wheel_pinned_like_the_noxfile(workflow: str) -> None:
    env = re.findall(r'^\s*STABILITY_TORCH:\s*"([^"]+)"\s*$', workflow, flags=re.M)
    assert len(env) == 1, "the workflow sets STABILITY_TORCH once"
    assert CPU_INDEX in env[0], "without the CPU index PyPI's Linux torch pulls CUDA"
    default = re.search(r'"STABILITY_TORCH",\s*"([^"]+)"', (ROOT / "noxfile.py").read_text())
    assert default, "noxfile.py no longer reads STABILITY_TORCH with a default pin"
    assert env[0].split()[0] == default.group(1), "the workflow's torch pin differs from nox's"


def test_runs_the_readme_test_command(workflow: str) -> None:
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"python3? -m nox -s tests", readme)
    assert command, "the README no longer shows the nox test command"
    runs = [s["run"] for s in steps(workflow) if "run" in s]
    assert command.group(0) in runs


def test_gate_judges_against_the_base_and_writes_the_job_summary(workflow: str) -> None:
    gate = step(workflow, "run", "nox -s gate")
    assert "base.sha" in gate.get("env", "") and "'auto'" in gate.get("env", "")
    assert '--against "$BASE"' in gate["run"]
    assert "--format markdown" in gate["run"]
    assert gate["run"].endswith('| tee -a "$GITHUB_STEP_SUMMARY"')
    # pipefail (GitHub's `shell: bash`) keeps the gate's exit code through tee
    assert re.search(r"^    defaults:\n      run:\n        shell: bash$", workflow, flags=re.M)


def test_report_and_artifact_survive_a_failed_gate(workflow: str) -> None:
    names = [s.get("run", s.get("uses", "")) for s in steps(workflow)]
    keys = ("nox -s tests", "nox -s gate", "nox -s report", "upload-artifact@")
    order = [[i for i, n in enumerate(names) if key in n] for key in keys]
    assert all(len(o) == 1 for o in order), f"one step each for {keys}: {names}"
    assert order == sorted(order), "tests, gate, report, upload: in that order"
    report = step(workflow, "run", "nox -s report")
    assert report.get("if") in {"${{ !cancelled() }}", "${{ always() }}", "always()"}
    upload = step(workflow, "uses", "actions/upload-artifact@")
    assert upload.get("if") == "always()"
    assert {"name: stability-report", "path: reports/"} <= set(upload["with"].splitlines())


def test_no_expression_is_spliced_into_a_script(workflow: str) -> None:
    for s in steps(workflow):
        assert "${{" not in s.get("run", ""), f"pass expressions through env: {s['run']!r}"


def test_least_privilege_cancellation_and_a_time_limit(workflow: str) -> None:
    lines = content_lines(workflow)
    assert "permissions:" in lines and "  contents: read" in lines
    assert "  cancel-in-progress: true" in lines
    assert any(re.fullmatch(r"\s+timeout-minutes: \d+", line) for line in lines)
