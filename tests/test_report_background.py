"""The report's background step: a subprocess that writes to its log, waited for later,
and ended (not left behind) when the report fails before collecting it."""

import io
import sys
from pathlib import Path

from stability.report.background import Pending, Started
from stability.report.progress import Display


def test_started_runs_to_its_log_and_reports_its_exit_code(tmp_path: Path) -> None:
    code = "import sys; print('[ 50%]'); print('done'); sys.exit(3)"
    running = Started([sys.executable, "-c", code], tmp_path, tmp_path / "out.log")
    assert running.wait(Display(io.StringIO(), live=False), "tiny") == 3
    assert (tmp_path / "out.log").read_text().splitlines() == ["[ 50%]", "done"]
    assert running._percent() == "50"


def test_abort_ends_a_running_subprocess(tmp_path: Path) -> None:
    running = Started(
        [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path, tmp_path / "l"
    )
    pending = Pending(lambda: running.wait(Display(io.StringIO()), "sleep"), running)
    pending.abort()
    assert running.proc.returncode is not None  # reaped, not left for a later test


def test_a_ready_result_needs_no_subprocess() -> None:
    pending = Pending.ready(("step", None))
    pending.abort()  # nothing to end
    assert pending.result() == ("step", None)
