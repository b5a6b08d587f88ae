"""The report's property-suite step: reuse the cached junit XML this code made, or start
``pytest properties`` now and collect it later (``background``: it runs beside the sweeps).

``--quick`` runs the dev profile without the ``slow`` tests; the full report, the ci
profile. A full run's cached result also serves a quick report (it checked more).
"""

import sys
import time
from pathlib import Path

from stability.report.background import Pending, Started
from stability.report.cache import Cache, fingerprint, property_options, property_run
from stability.report.inputs import PropertyRun, Step, StepStatus
from stability.report.progress import Display, tail

NAME = "property suite"
PYTEST_COMPLETED = (0, 1, 5)  # all passed, some failed, none collected: a result to keep
Outcome = tuple[Step, PropertyRun | None]


def start_properties(
    root: Path, cache: Cache, code: tuple[str, str], quick: bool, display: Display
) -> Pending[Outcome]:
    """The step's outcome to come: ready at once when skipped or reused, else a running
    pytest whose result ``Pending.result()`` waits for."""
    folder = root / "properties"
    if not (folder.is_dir() and any(folder.glob("test_*.py"))):
        step = Step(NAME, "skipped", f"no test files in {folder}")
        display.say(f"{NAME}: {step.detail}")
        return Pending.ready((step, None))
    code_hash, label = code
    fp = fingerprint(code_hash, "properties", property_options(quick))
    full = fingerprint(code_hash, "properties", property_options(False))
    cached = cache.find("properties", full) or cache.find("properties", fp)
    if cached is not None and Path(cached["junit"]).exists():
        run = property_run(cached, current=True, how="reused: same code and environment")
        detail = f"reused the run of {cached['finished']} ({label})"
        display.say(f"{NAME}: {detail}")
        return Pending.ready((Step(NAME, "reused", detail), run))
    junit = cache.folder / f"properties-{fp[:16]}.xml"
    log = junit.with_suffix(".log")
    junit.unlink(missing_ok=True)
    profile = property_options(quick)["profile"]
    cmd = [
        sys.executable, "-m", "pytest", "properties",
        f"--hypothesis-profile={profile}", "--hypothesis-show-statistics",
        f"--junitxml={junit}", "-o", "junit_family=xunit2", "-q", "-p", "no:cacheprovider",
    ]  # fmt: skip
    if quick:
        cmd += ["-m", "not slow"]
    display.say(
        f"{NAME}: running pytest properties ({profile} profile)"
        + (", without the slow ones" if quick else "")
        + ", beside the next steps"
    )
    running = Started(cmd, root, log)

    def finish() -> Outcome:
        code = running.wait(display, NAME)
        seconds = running.seconds
        if not junit.exists():
            display.say(f"{NAME}: pytest exited {code} without a junit XML; log: {log}")
            tail(log, display)
            return Step(NAME, "failed", f"pytest exited {code}, no junit XML", seconds), None
        if code not in PYTEST_COMPLETED:  # interrupted or broken: report it, never reuse it
            display.say(f"{NAME}: pytest exited {code}; log: {log}")
            tail(log, display)
            run = property_run(
                {"junit": str(junit), "log": str(log), "exit_code": code}, None, "incomplete run"
            )
            return Step(NAME, "failed", f"pytest exited {code}", seconds), run
        entry = {
            "fingerprint": fp,
            "code": label,
            "junit": str(junit),
            "log": str(log),
            "exit_code": code,
            "seconds": round(seconds, 1),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "quick": quick,
        }
        cache.add("properties", entry)
        status: StepStatus = "ran" if code == 0 else "failed"
        detail = f"pytest exit {code} in {seconds:.0f} s, beside the other steps ({label})"
        display.say(f"{NAME}: {detail}")
        if code != 0:
            tail(log, display)
        return Step(NAME, status, detail, seconds), property_run(entry, True, "ran now")

    return Pending(finish, running)
