"""The sweep's progress in a log (not a terminal): plain periodic lines on stderr, and an
ETA from the median of recent cell times, so the warm-up cell does not inflate it."""

import io

from stability.sweep.run import Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(cell_seconds: list[float], every: float = 10.0) -> tuple[Progress, list[str]]:
    clock = FakeClock()
    out = io.StringIO()  # not a terminal
    progress = Progress(len(cell_seconds), stream=out, every=every, clock=clock)
    for s in cell_seconds:
        clock.now += s
        progress.advance("cell")
    return progress, out.getvalue().splitlines()


def test_plain_lines_every_interval_and_at_the_end() -> None:
    _, lines = run([3.0] * 10, every=10.0)  # 30 s in all: lines at 12 s, 24 s and the end
    assert lines == [
        "sweep: 4/10 cells (40%), 12 s, eta 18 s",
        "sweep: 8/10 cells (80%), 24 s, eta 6 s",
        "sweep: 10/10 cells (100%), 30 s, done",
    ]


def test_eta_ignores_the_warm_up_cell() -> None:
    progress, _ = run([60.0, 1.0, 1.0, 1.0], every=1e9)
    progress.total = 104  # 100 cells left at 1 s each
    assert progress.eta() == 100.0
    # The witness: a rate over all cells (what the old bar did) is 0.063 cells/s, ~1600 s.
    old_eta = (progress.total - progress.count) / (progress.count / 63.0)
    assert old_eta > 10 * progress.eta()


def test_quiet_is_silent() -> None:
    out = io.StringIO()
    progress = Progress(3, stream=out, enabled=False)
    for _ in range(3):
        progress.advance()
    assert out.getvalue() == ""


def test_eta_shares_a_stacks_time_among_its_cells() -> None:
    """A stack of 5 cells lands at once every 10 s: 2 s a cell, not 0 s for 4 cells of 5."""
    progress, _ = run(([10.0] + [0.0] * 4) * 3, every=1e9)
    progress.total = 115  # 100 cells left at 2 s each
    assert progress.eta() == 200.0
    # The witness: the median of the raw gaps between cells is 0 s, an ETA of nothing.
    gaps = ([10.0] + [0.0] * 4) * 3
    assert (progress.total - progress.count) * sorted(gaps[5:])[len(gaps[5:]) // 2] == 0.0
