"""nox sessions for stability: ``nox -l`` lists them, ``nox -s NAME`` runs one.

torch is installed first and pinned (``torch==2.13.0``: a CPU wheel), so the project's
loose ``torch>=2.3`` requirement never pulls a multi-GB CUDA build on a CPU machine. GPU
users set ``STABILITY_TORCH`` to their own pip arguments, for example
``STABILITY_TORCH="torch --index-url https://download.pytorch.org/whl/cu126"``.
"""

import os
import shlex

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["tests", "lint", "typecheck"]

PYTHON = "3.11"
TORCH = shlex.split(os.environ.get("STABILITY_TORCH", "torch==2.13.0"))


def install(session: nox.Session, *extras: str) -> None:
    """Install pinned torch first, then the project (editable) with ``extras``."""
    session.install(*TORCH)
    target = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", target)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the tool's tests and the property suite (hypothesis ``ci`` profile)."""
    # bench: the benchmarks' own fixtures; hf: tiny real architectures (transformers) and the
    # Trainer callback; lightning, tensorboard and wandb: the other integrations' tests
    install(session, "test", "bench", "dask", "hf", "lightning", "tensorboard", "wandb")
    session.run(
        "pytest",
        "tests",
        "properties",
        "--hypothesis-profile=ci",
        "--junitxml=results/junit.xml",
        *session.posargs,
    )


@nox.session(python=PYTHON)
def properties(session: nox.Session) -> None:
    """Run only the property suite; pass ``-- --hypothesis-profile=thorough`` for more."""
    install(session, "test")
    args = session.posargs or ["--hypothesis-profile=ci"]
    session.run("pytest", "properties", "--junitxml=results/properties-junit.xml", *args)


@nox.session(python=PYTHON, default=False)
def sweep(session: nox.Session) -> None:
    """Run the default sweep (or ``-- <sweep flags>``) into results/."""
    install(session)
    session.run("stability", "sweep", *session.posargs)


@nox.session(python=PYTHON, default=False)
def report(session: nox.Session) -> None:
    """Run what is missing (sweep, properties, quick benchmarks) and write reports/index.html."""
    install(session, "test", "bench")
    session.run("stability", "report", *session.posargs)


# ``nox -s bench -- --compare``: judge this run against the previous one saved under
# results/benchmarks/. The threshold and why are in docs/benchmarks.md (an A/A run of the
# quick grid on unchanged code passes it).
BENCH_STORAGE = "file://results/benchmarks"
BENCH_COMPARE_FAIL = "median:25%"


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Run the benchmark grid (``-- --quick`` for the reduced one) and store the results;
    ``-- --compare`` also saves the run and fails on a slowdown against the previous one."""
    # hf: the watch's GPT-2 and the Trainer callback's overhead benchmarks (skipped without it)
    install(session, "bench", "hf")
    args = list(session.posargs)
    if "--compare" in args:
        args.remove("--compare")
        args += [
            f"--benchmark-storage={BENCH_STORAGE}",
            "--benchmark-autosave",
            "--benchmark-compare",
            f"--benchmark-compare-fail={BENCH_COMPARE_FAIL}",
        ]
    session.run("pytest", "benchmarks", "--benchmark-json=results/bench.json", "-q", *args)
    session.run("stability", "bench-ingest", "results/bench.json")


@nox.session(python=PYTHON, default=False)
def gate(session: nox.Session) -> None:
    """Judge figures against baselines/ and HEAD against its parent: 1 regression, 2 unsure."""
    install(session)
    args = list(session.posargs)
    if not any(a == "--against" or a.startswith("--against=") for a in args):
        args += ["--against", "auto"]  # skipped with one line where HEAD has no parent
    # stderr=None: the reasons stay on stderr, so `--format markdown | tee` gets the verdict only.
    session.run("stability", "gate", *args, stderr=None)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check style and common bugs with ruff."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Type-check the library with mypy --strict."""
    install(session, "lint", "test")
    session.run("mypy")
