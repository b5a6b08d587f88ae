"""A report step that runs beside the others: the property suite's subprocess.

The property suite is a pytest subprocess of a minute or more that shares nothing with
the in-process steps (sweeps, doctor, spectrum, experiments): it reads the code, writes a
junit XML, and the report needs its result only at the end. Waiting for it before starting
them left a core idle through pytest's start-up and every single-threaded stretch of either
side, so the runner starts it first and collects it later. The benchmarks and the gate's
throughput never run beside anything: a timing taken next to other work measures the load.

No thread: the subprocess writes straight to its log file, and ``wait`` reads the log for
pytest's percentage. (A thread pumping its output would be alive when the sweep's pool
forks its workers, and a fork may copy a lock that thread holds.) A failure of the
in-process steps, or Ctrl-C, ends the subprocess (``abort``) rather than leave it running
for minutes behind the report's back.
"""

import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from stability.report.progress import Display

T = TypeVar("T")
POLL_S = 0.5
TERMINATE_WAIT_S = 10.0
_PERCENT = re.compile(rb"\[\s*(\d+)%\]")


class Started:
    """``cmd`` running from now on in ``cwd``, its stdout and stderr going to ``log``."""

    def __init__(self, cmd: Sequence[str], cwd: Path, log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.start = time.perf_counter()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as out:  # the child holds its own copy of the descriptor
            self.proc = subprocess.Popen(
                list(cmd), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env
            )

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def wait(self, display: Display, label: str) -> int:
        """Its exit code, once it ends; meanwhile pytest's percentage from the log."""
        while (code := self.proc.poll()) is None:
            display.update(f"{label}: {self._percent()}% ({self.seconds:.0f} s)")
            time.sleep(POLL_S)
        return code

    def _percent(self) -> str:
        try:
            with self.log.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
                found = _PERCENT.findall(f.read())
        except OSError:
            return "?"
        return found[-1].decode() if found else "0"

    def abort(self) -> None:
        """Terminate it (kill it if it ignores that) and reap it."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(TERMINATE_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Pending(Generic[T]):
    """A step's result to come: ``finish()`` gives it (waiting for ``running`` if any)."""

    def __init__(self, finish: Callable[[], T], running: Started | None = None) -> None:
        self._finish = finish
        self.running = running

    @classmethod
    def ready(cls, value: T) -> "Pending[T]":
        return cls(lambda: value)

    def busy(self) -> bool:
        """Whether its subprocess is still running."""
        return self.running is not None and self.running.proc.poll() is None

    def result(self) -> T:
        return self._finish()

    def abort(self) -> None:
        if self.running is not None:
            self.running.abort()
