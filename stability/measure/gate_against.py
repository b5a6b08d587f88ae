"""``stability gate --against REV``: judge the candidate against another revision, on this
machine, each side running its own tree's code.

1. Figures: REV's and the candidate's stability figures, each computed by a process whose
   ``PYTHONPATH`` is its own tree, compared cell by cell with the gate's tolerances.
2. Speed: the two trees' measuring processes are timed in alternation, A/B/A/B, ``pairs``
   times; ratio = median(B seconds) / median(A seconds), a regression when slower by more
   than ``AGAINST_TOLERANCE`` with p < ``ALPHA``. Interleaving puts the neighbours' load on
   both sides. The bar is 10 %: each side's samples come from one process, and a process can
   sit a few percent off another for its whole life (placement, allocation), which no count
   of rounds averages away; a CI run of two trees differing only in non-timed code once read
   x1.052 with p = 0.002. A/A runs here read x0.76 to x1.12.

The candidate is the working tree, or ``candidate`` REV2. ``rev="auto"`` means the first
parent of HEAD; a clone without one (shallow, or a single commit) skips this judgement with
one line. The ``STABILITY_PLANT_*`` variables (planted regressions for
``scripts/prove_gate.py``) reach only the candidate side.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from stability.interrupts import deferred_interrupt
from stability.measure import baseline as bl
from stability.measure.gate import (
    REGRESSED,
    Row,
    Verdict,
    cannot_judge,
    compare_figures,
    default_rows,
    judge_slowdown,
)
from stability.measure.stats import min_samples

AGAINST_TOLERANCE = 0.10
AGAINST_PAIRS = 12
AGAINST_BLOCKS = 3  # timed blocks per side per turn
AUTO = "auto"
PLANT_PREFIX = "STABILITY_PLANT_"
# Where each layout of the package keeps the figures and the timing worker (oldest last), so
# REV may predate a move.
FIGURE_MODULES = ("stability.measure.baseline", "stability.baseline")
WORKER_MODULES = ("stability.measure.worker", "stability.measure.bench", "stability.bench")
FIGURE_DRIVER = """
import importlib, json, sys
for name in sys.argv[1:]:
    try:
        mod = importlib.import_module(name)
        break
    except ImportError:
        continue
else:
    sys.exit("no module with stability figures in this revision: " + ", ".join(sys.argv[1:]))
json.dump({"defaults": mod.defaults(), "stability": mod.stability_figures()}, sys.stdout)
"""


class Skipped(Exception):
    """There is nothing to compare against here (no parent commit): not a failure."""


def min_pairs() -> int:
    """The fewest A/B pairs whose samples could reach significance at all."""
    pairs = 1
    while min_samples(pairs * AGAINST_BLOCKS) > pairs * AGAINST_BLOCKS:
        pairs += 1
    return pairs


def _git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=False, cwd=cwd)


def resolve(rev: str) -> str:
    """A commit id for ``rev``; ``auto`` is HEAD's first parent, ``Skipped`` when absent."""
    if _git("rev-parse", "--show-toplevel").returncode != 0:
        raise bl.CannotJudge("not inside a git repository: --against needs one")
    if rev == AUTO:
        proc = _git("rev-parse", "--verify", "--quiet", "HEAD^1^{commit}")
        if proc.returncode != 0:
            raise Skipped(
                "gate: the A/B check against the parent commit (figures and throughput) was "
                "skipped: HEAD has no parent in this clone (shallow or a single commit)"
            )
        return proc.stdout.strip()
    proc = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if proc.returncode != 0:
        raise bl.CannotJudge(f"cannot check out {rev!r}: no such revision in this repository")
    return proc.stdout.strip()


@contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A detached ``git worktree`` of ``rev`` in a temporary directory, removed afterwards.

    Removed however the block ends, Ctrl-C included, and also when the interrupt cut
    ``git worktree add`` short: a half-made worktree is still registered with git. The
    removal itself is shielded from a second Ctrl-C (``deferred_interrupt``).
    """
    tmp = Path(tempfile.mkdtemp(prefix="stability-gate-"))
    tree = tmp / "tree"
    try:
        proc = _git("worktree", "add", "--detach", str(tree), rev)
        if proc.returncode != 0:
            raise bl.CannotJudge(f"cannot check out {rev!r}: {proc.stderr.strip()}")
        yield tree
    finally:
        with deferred_interrupt():
            _git("worktree", "remove", "--force", str(tree))
            shutil.rmtree(tmp, ignore_errors=True)
            _git("worktree", "prune")


@contextmanager
def _candidate(rev: str | None) -> Iterator[Path]:
    if rev is not None:
        with worktree(rev) as tree:
            yield tree
        return
    root = _git("rev-parse", "--show-toplevel").stdout.strip()
    if not root:
        raise bl.CannotJudge("not inside a git repository: --against needs one")
    yield Path(root)


def _env(tree: Path, plant: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if plant or not k.startswith(PLANT_PREFIX)}
    env["PYTHONPATH"] = str(tree)  # ahead of the editable install of the main tree
    return env


def _first_module(tree: Path, modules: tuple[str, ...]) -> str:
    for name in modules:
        parts = name.split(".")
        if (tree.joinpath(*parts).with_suffix(".py")).exists():
            return name
    raise bl.CannotJudge(f"{tree} has none of {list(modules)}: too old for --against")


def tree_figures(tree: Path, plant: bool) -> dict[str, Any]:
    """``{"defaults": ..., "stability": ...}`` computed by ``tree``'s own code."""
    proc = subprocess.run(
        [sys.executable, "-c", FIGURE_DRIVER, *FIGURE_MODULES],
        cwd=tree,
        env=_env(tree, plant),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise bl.CannotJudge(
            f"computing the figures in {tree} failed: {proc.stderr.strip()[-400:]}"
        )
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise bl.CannotJudge(f"the figures from {tree} are not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("stability"), dict):
        raise bl.CannotJudge(f"the figures from {tree} have no 'stability' part")
    return doc


class Worker:
    """A measuring process running ``tree``'s own code (its timing worker module)."""

    def __init__(self, tree: Path, plant: bool) -> None:
        self.tree = tree
        self.proc = subprocess.Popen(
            [sys.executable, "-m", _first_module(tree, WORKER_MODULES), "worker"],
            cwd=tree,
            env=_env(tree, plant),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def measure(self, blocks: int) -> list[float]:
        req = {
            "config": bl.SPEED_CONFIG.as_dict(),
            "batch": bl.SPEED_BATCH,
            "rounds": blocks,
            "threads": bl.THREADS,
        }
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(json.dumps(req) + "\n")
            stdin.flush()
            line = stdout.readline()
        except OSError:
            line = ""
        if not line:
            err = _read(self.proc.stderr)
            raise bl.CannotJudge(
                f"the measuring process in {self.tree} failed: {err.strip()[-400:]}"
            )
        try:
            return [float(s) for s in json.loads(line)["seconds"]]
        except (ValueError, KeyError, TypeError):
            raise bl.CannotJudge(
                f"the measuring process in {self.tree} sent {line[:80]!r}"
            ) from None

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _read(stream: IO[str] | None) -> str:
    if stream is None:
        return ""
    try:
        return stream.read()
    except OSError:
        return ""


def interleaved_seconds(tree_a: Path, tree_b: Path, pairs: int) -> tuple[list[float], list[float]]:
    """Per-call seconds of A and B, timed in alternating order, ``pairs`` turns each."""
    a, b = Worker(tree_a, plant=False), Worker(tree_b, plant=True)
    try:
        a.measure(1)  # start-up, warm-up and block sizing, untimed
        b.measure(1)
        ta: list[float] = []
        tb: list[float] = []
        for i in range(pairs):
            first, second = (a, b) if i % 2 == 0 else (b, a)
            for w in (first, second):
                (ta if w is a else tb).extend(w.measure(AGAINST_BLOCKS))
        return ta, tb
    finally:
        a.close()
        b.close()


def against(
    rev: str, candidate: str | None = None, pairs: int = AGAINST_PAIRS, speed: bool = True
) -> Verdict:
    """Figures, then (``speed``) interleaved timing, of REV (A) against the candidate (B)."""
    if pairs < min_pairs():
        raise bl.CannotJudge(
            f"--pairs {pairs} is too few: {min_pairs()} or more can reach p<0.01 "
            f"({AGAINST_BLOCKS} samples a side per pair)"
        )
    label = candidate or "working tree"
    try:
        commit = resolve(rev)
        if commit[:7] not in rev:
            rev = f"{rev} ({commit[:10]})"
        with worktree(commit) as tree_a, _candidate(candidate) as tree_b:
            fig_a, fig_b = tree_figures(tree_a, plant=False), tree_figures(tree_b, plant=True)
            verdict = Verdict(against=rev)
            verdict.rows += [
                Row(
                    "against-default",
                    r.item,
                    r.baseline,
                    r.current,
                    r.change,
                    r.tolerance,
                    r.verdict,
                    f"{r.reason} in {label} vs {rev}",
                )
                for r in default_rows(fig_a.get("defaults", {}), fig_b.get("defaults", {}))
            ]
            verdict.rows += compare_figures(
                fig_a["stability"], fig_b["stability"], "against-figures"
            )
            if not verdict.rows:
                verdict.rows.append(
                    Row(
                        "against-figures",
                        "-",
                        "0 cells",
                        "0 cells",
                        "-",
                        "-",
                        REGRESSED,
                        f"{rev} and {label} share no stability cell",
                    )
                )
            if speed:
                ta, tb = interleaved_seconds(tree_a, tree_b, pairs)
                row = judge_slowdown(
                    f"train-step s/call {label} vs {rev}",
                    ta,
                    tb,
                    AGAINST_TOLERANCE,
                    higher_is_slower=True,
                )
                verdict.rows.append(replace(row, check="against-throughput"))
                verdict.notes.append(
                    f"note: {pairs} A/B pairs x {AGAINST_BLOCKS} blocks a side, alternating order"
                )
            return verdict
    except Skipped as exc:
        return Verdict(notes=[str(exc)], against=rev)
    except bl.CannotJudge as exc:
        out = cannot_judge("against", f"cannot judge: {exc}")
        out.against = rev
        return out
