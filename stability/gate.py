"""The CI gate: compare this code with a baseline (or with another revision) and fail closed.

Exit codes: 0 pass, 1 regression, 2 cannot judge (missing, corrupt or incompatible
baseline, or a different environment). Nothing passes by default: a check that cannot
run makes the verdict 2, never 0.

Stability figures (``stability.baseline``: per-layer variances of a fixed CPU grid, fixed
seeds, one thread) are deterministic on one machine, so they are compared like
``torch.testing.assert_close``: ``|now - base| <= atol + rtol * |base|`` with the rtol of
torch's defaults for the cell's dtype (float64 1e-7, float32 1.3e-6) and atol 0, because
the figures are variances spanning 1e-30 to 1e30 where any absolute floor would hide a
vanishing signal; NaN matches NaN, inf matches inf. A changed default (``MLPConfig``) is
reported by name and also moves every default cell.

Throughput is judged on samples of the training step (``baseline.SPEED_CONFIG``), one per
timed round, and the rule is the same in both modes:

    regression  iff  ratio is beyond the tolerance  AND  a one-sided Mann-Whitney U test
                     over the rounds gives p < ALPHA (default 0.01)

- against the baseline: the samples are efficiencies (step GFLOP/s over the GFLOP/s of a
  GEMM block timed right beside it, per round), ratio = median(now) / median(baseline),
  tolerance ``EFFICIENCY_TOLERANCE`` (25 %): across runs on a shared 2-core machine the
  median efficiency still moves by about 10 %, so this catches gross slowdowns only;
- ``--against REV``: a ``git worktree`` of REV and the candidate (the working tree, or
  ``--candidate REV2``) each run a measuring process (``python -m stability.bench worker``)
  and are timed in alternation, A/B/A/B, ``AGAINST_PAIRS`` times; ratio = median(B seconds)
  / median(A seconds), tolerance ``AGAINST_TOLERANCE`` (5 %). Interleaving puts the
  neighbours' load on both sides, which is what makes a 5 % bar usable here.

The ``STABILITY_PLANT_*`` variables (planted regressions for ``scripts/prove_gate.py``)
reach only the candidate side of ``--against``.
"""

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from stability import baseline as bl

PASS, REGRESSION, CANNOT_JUDGE = 0, 1, 2
ALPHA = 0.01
EFFICIENCY_TOLERANCE = 0.25
AGAINST_TOLERANCE = 0.05
AGAINST_PAIRS = 12
AGAINST_BLOCKS = 3  # timed blocks per side per turn
# assert_close's default rtol per dtype; atol 0 (see the module docstring).
RTOL = {"float64": 1e-7, "float32": 1.3e-6, "bfloat16": 1.6e-2, "float16": 1e-3}
MAX_ROWS = 25  # rows of the diff shown per check; the rest are counted
PLANT_PREFIX = "STABILITY_PLANT_"


@dataclass(frozen=True)
class Row:
    """One line of the verdict table."""

    check: str
    item: str
    baseline: str
    current: str
    change: str
    tolerance: str
    verdict: str  # "ok", "REGRESSION", "CANNOT JUDGE"


@dataclass
class Verdict:
    code: int
    rows: list[Row]
    notes: list[str]

    def table(self) -> str:
        heads = ("check", "item", "baseline", "current", "change", "tolerance", "verdict")
        bad_rows = [r for r in self.rows if r.verdict != "ok"]
        shown = bad_rows[:MAX_ROWS] + [
            r for r in self.rows if r.verdict == "ok" and r.check != "stability"
        ]
        cells = [heads] + [
            (r.check, r.item, r.baseline, r.current, r.change, r.tolerance, r.verdict)
            for r in shown
        ]
        widths = [max(len(c[i]) for c in cells) for i in range(len(heads))]
        lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(heads))) for c in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        bad = len(bad_rows)
        same = sum(r.verdict == "ok" and r.check == "stability" for r in self.rows)
        if len(bad_rows) > MAX_ROWS:
            lines.append(f"... and {len(bad_rows) - MAX_ROWS} more rows not ok")
        if same:
            lines.append(f"{same} stability figure lists equal to the baseline within rtol")
        word = {PASS: "PASS", REGRESSION: "REGRESSION", CANNOT_JUDGE: "CANNOT JUDGE"}[self.code]
        lines.extend(self.notes)
        lines.append(f"gate: {word} (exit {self.code}; {len(self.rows)} checks, {bad} not ok)")
        return "\n".join(lines)


# -- statistics ------------------------------------------------------------------------------
def mann_whitney_greater(x: Sequence[float], y: Sequence[float]) -> float:
    """One-sided p-value that ``x`` tends to be larger than ``y`` (normal approximation with
    tie and continuity corrections; fine from about 8 samples a side)."""
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return math.nan
    pooled = sorted([(v, 0) for v in x] + [(v, 1) for v in y])
    ranks = [0.0] * len(pooled)
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    r1 = sum(r for r, (_, side) in zip(ranks, pooled, strict=True) if side == 0)
    u = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))


def judge_slowdown(
    name: str, base: Sequence[float], now: Sequence[float], tolerance: float, higher_is_slower: bool
) -> Row:
    """The throughput rule: beyond ``tolerance`` and significant at ``ALPHA``."""
    ratio = statistics.median(now) / statistics.median(base)
    slower = ratio if higher_is_slower else 1 / ratio
    p = mann_whitney_greater(now, base) if higher_is_slower else mann_whitney_greater(base, now)
    bad = slower > 1 + tolerance and p < ALPHA
    return Row(
        "throughput",
        name,
        f"{statistics.median(base):.4g}",
        f"{statistics.median(now):.4g}",
        f"x{ratio:.3f} (p={p:.2g})",
        f"slower by >{tolerance:.0%} and p<{ALPHA}",
        "REGRESSION" if bad else "ok",
    )


# -- stability figures -----------------------------------------------------------------------
def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _close(base: float, now: float, rtol: float) -> bool:
    if math.isnan(base) or math.isnan(now):
        return math.isnan(base) and math.isnan(now)
    if math.isinf(base) or math.isinf(now):
        return base == now
    return abs(now - base) <= rtol * abs(base)


def compare_stability(
    base: dict[str, Any], now: dict[str, Any], base_defaults: dict[str, Any], defaults: Any
) -> list[Row]:
    rows: list[Row] = []
    for key in sorted(set(base_defaults) | set(defaults)):
        b, n = base_defaults.get(key), defaults.get(key)
        if b != n:
            rows.append(
                Row("default", f"MLPConfig.{key}", str(b), str(n), "changed", "equal", "REGRESSION")
            )
    for name in base.keys() - now.keys():
        rows.append(Row("stability", name, "present", "missing", "-", "-", "REGRESSION"))
    for name in sorted(base.keys() & now.keys()):
        b, n = base[name], now[name]
        rtol = RTOL.get(str(b.get("dtype")), RTOL["float32"])
        if b.get("config") != n.get("config"):
            rows.append(
                Row("stability", f"{name} config", str(b.get("config")), str(n.get("config")),
                    "changed", "equal", "REGRESSION")
            )  # fmt: skip
        for fig in bl.FIGURES:
            bv, nv = b.get(fig, []), n.get(fig, [])
            if len(bv) != len(nv):
                rows.append(
                    Row("stability", f"{name} {fig}", f"{len(bv)} layers", f"{len(nv)} layers",
                        "changed", "equal", "REGRESSION")
                )  # fmt: skip
                continue
            worst = None
            for layer, (x, y) in enumerate(zip(bv, nv, strict=True), start=1):
                if not _close(float(x), float(y), rtol):
                    worst = worst or (layer, x, y)
                    rel = (y - x) / abs(x) if x and math.isfinite(x) else math.inf
                    rows.append(
                        Row("stability", f"{name} {fig} L{layer}", _fmt(x), _fmt(y),
                            f"{rel:+.2%}" if math.isfinite(rel) else "-",
                            f"rtol {rtol:g}", "REGRESSION")
                    )  # fmt: skip
            if worst is None:
                rows.append(
                    Row("stability", f"{name} {fig}", f"{len(bv)} layers", "same", "0",
                        f"rtol {rtol:g}", "ok")
                )  # fmt: skip
    return rows


def environment_rows(base_env: dict[str, Any], env: dict[str, Any]) -> list[Row]:
    return [
        Row("environment", key, str(base_env.get(key)), str(env.get(key)), "differs",
            "equal", "CANNOT JUDGE")
        for key in sorted(set(base_env) | set(env))
        if base_env.get(key) != env.get(key)
    ]  # fmt: skip


def gate(path: Path | str = bl.DEFAULT_PATH, throughput: bool = True) -> Verdict:
    """Measure now and compare with the baseline at ``path``."""
    try:
        base = bl.load(path)
    except bl.CannotJudge as exc:
        return Verdict(CANNOT_JUDGE, [], [f"cannot judge: {exc}"])
    env_rows = environment_rows(base["environment"], bl.fingerprint())
    if env_rows:
        note = (
            "cannot judge: the baseline was measured in another environment; rebaseline "
            "on this machine with: stability baseline --reason '...'"
        )
        return Verdict(CANNOT_JUDGE, env_rows, [note])
    rows = compare_stability(
        base["stability"], bl.stability_figures(), base["defaults"], bl.defaults()
    )
    notes = []
    if throughput:
        now = bl.efficiency_samples()
        rows.append(
            judge_slowdown(
                "train-step efficiency",
                base["throughput"]["efficiency"],
                now["efficiency"],
                EFFICIENCY_TOLERANCE,
                higher_is_slower=False,
            )
        )
        if now["nonfinite_losses"]:
            notes.append(f"note: {now['nonfinite_losses']} non-finite losses in timed steps")
    code = REGRESSION if any(r.verdict == "REGRESSION" for r in rows) else PASS
    return Verdict(code, rows, notes)


# -- A/B against another revision --------------------------------------------------------------
@contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A detached ``git worktree`` of ``rev`` in a temporary directory, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="stability-gate-"))
    tree = tmp / "tree"
    proc = subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), rev],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise bl.CannotJudge(f"cannot check out {rev!r}: {proc.stderr.strip()}")
    try:
        yield tree
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(tree)], capture_output=True, check=False
        )
        shutil.rmtree(tmp, ignore_errors=True)


class Worker:
    """A measuring process running ``tree``'s own code (``python -m stability.bench worker``)."""

    def __init__(self, tree: Path, plant: bool) -> None:
        env = {k: v for k, v in os.environ.items() if plant or not k.startswith(PLANT_PREFIX)}
        env["PYTHONPATH"] = str(tree)  # ahead of the editable install of the main tree
        self.tree = tree
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stability.bench", "worker"],
            cwd=tree,
            env=env,
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
                f"the measuring process in {self.tree} failed (does that revision have "
                f"stability/bench.py with its worker?): {err.strip()[-400:]}"
            )
        reply = json.loads(line)
        return [float(s) for s in reply["seconds"]]

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


def against(rev: str, candidate: str | None = None, pairs: int = AGAINST_PAIRS) -> Verdict:
    """Time REV (A) and the candidate (B: working tree, or ``candidate`` REV) alternately."""
    try:
        with worktree(rev) as tree_a, _candidate(candidate) as tree_b:
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
            finally:
                a.close()
                b.close()
    except bl.CannotJudge as exc:
        return Verdict(CANNOT_JUDGE, [], [f"cannot judge: {exc}"])
    label = f"train-step s/call {candidate or 'working tree'} vs {rev}"
    row = judge_slowdown(label, ta, tb, AGAINST_TOLERANCE, higher_is_slower=True)
    code = REGRESSION if row.verdict == "REGRESSION" else PASS
    note = f"{pairs} A/B pairs x {AGAINST_BLOCKS} blocks a side, alternating order"
    return Verdict(code, [row], [note])


@contextmanager
def _candidate(rev: str | None) -> Iterator[Path]:
    if rev is None:
        root = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if not root:
            raise bl.CannotJudge("not inside a git repository: --against needs one")
        yield Path(root)
    else:
        with worktree(rev) as tree:
            yield tree
