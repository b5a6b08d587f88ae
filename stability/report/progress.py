"""The runner's progress display: a live line on a terminal, a line per step elsewhere.

A report run takes minutes (sweeps, the property suite, benchmarks); on a terminal one
line is rewritten in place, in a CI log a line appears now and then so a long step still
shows signs of life without flooding the log.
"""

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from stability.sweep.run import Progress

LOG_TAIL_LINES = 25
LOG_EVERY_S = 30.0  # progress lines in a non-terminal log
_PERCENT = re.compile(r"\[\s*(\d+)%\]")


class Display:
    """Where progress goes: a rewritten line on a terminal, plain lines in CI logs."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        # sys.stderr as it is now, not as it was at import (tests and tools replace it)
        self.stream = sys.stderr if stream is None else stream
        self.live = self.stream.isatty() if live is None else live
        self._last = time.monotonic()

    def say(self, text: str) -> None:
        self._clear()
        self.stream.write(f"report: {text}\n")
        self.stream.flush()

    def update(self, text: str) -> None:
        """Transient status: rewritten up to 10 times a second on a terminal; in a log, a
        line every ``LOG_EVERY_S`` seconds so a long step still shows signs of life."""
        now = time.monotonic()
        if not self.live:
            if now - self._last >= LOG_EVERY_S:
                self._last = now
                self.say(text)
            return
        if now - self._last < 0.1:
            return
        self._last = now
        self.stream.write(f"\r\x1b[2K  {text[:110]}")
        self.stream.flush()

    def _clear(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[2K")


class SweepProgress(Progress):
    """The sweep's bar on a terminal; a line every 10 % in logs."""

    def __init__(self, total: int, display: Display, label: str) -> None:
        super().__init__(total, stream=display.stream, enabled=display.live)
        self.display = display
        self.label = label
        self._next_report = 0.1

    def advance(self, label: str = "") -> None:
        super().advance(label)
        if not self.enabled and self.total and self.count / self.total >= self._next_report:
            elapsed = time.perf_counter() - self.start
            self.display.say(f"{self.label}: {self.count}/{self.total} cells, {elapsed:.0f} s")
            while self._next_report <= self.count / self.total:
                self._next_report += 0.1


def stream(cmd: Sequence[str], cwd: Path, log: Path, display: Display, label: str) -> int:
    """Run ``cmd``, teeing its output to ``log`` and its pytest percentage to the display."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (
        log.open("w") as out,
        subprocess.Popen(
            list(cmd), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        ) as proc,
    ):
        assert proc.stdout is not None
        percent = "0"
        for line in proc.stdout:
            out.write(line)
            match = _PERCENT.search(line)
            if match:
                percent = match.group(1)
            display.update(f"{label}: {percent}% ({time.perf_counter() - start:.0f} s)")
        return proc.wait()


def tail(log: Path, display: Display) -> None:
    """The last lines of a failed subprocess's log, so the reason shows without opening it."""
    with contextlib.suppress(OSError):
        for line in log.read_text().splitlines()[-LOG_TAIL_LINES:]:
            display.stream.write(f"    | {line}\n")
