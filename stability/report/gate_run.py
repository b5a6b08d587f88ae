"""The gate's part of a report run: judge the stability figures, time the throughput.

Both are cached in the runner's index under the code, the environment (the baseline's own
fingerprint of this machine: CPU model, cores, threads) and the baseline's bytes, so a
rebaseline or another machine invalidates them. The figures (0.2 s, deterministic) are
judged by ``stability.measure.gate.judge_baseline(path, throughput=False)``; throughput
(about 1 s of timing) only on the machine that wrote the baseline, NOT JUDGED elsewhere.
The report's gate section renders the resulting rows and judges nothing itself.
"""

import dataclasses
import hashlib
import io
import time
from pathlib import Path
from typing import Any

from stability.measure import baseline as bl
from stability.measure import gate
from stability.report.cache import Cache, fingerprint
from stability.report.inputs import GateResult, Step
from stability.report.progress import Display

FIGURES = "gate-figures"
THROUGHPUT = "gate-throughput"


def gate_fingerprint(code: str, baseline: Path, kind: str = THROUGHPUT) -> str:
    """Code + environment + the baseline's bytes: a rebaseline invalidates the verdict."""
    try:
        digest = hashlib.sha256(baseline.read_bytes()).hexdigest()
    except OSError:
        digest = "absent"
    return fingerprint(code, kind, {"baseline": digest, "environment": bl.fingerprint()})


def _entry(fp: str, label: str, seconds: float, **fields: Any) -> dict[str, Any]:
    return {
        "fingerprint": fp,
        "code": label,
        **fields,
        "seconds": round(seconds, 1),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _reuse(
    cache: Cache, kind: str, fp: str, name: str, what: str, label: str, display: Display
) -> tuple[Step, dict[str, Any]] | None:
    """The cached entry of ``kind`` for fingerprint ``fp`` as a "reused" step, if any."""
    cached = cache.find(kind, fp)
    if cached is None:
        return None
    detail = f"reused {what} of {cached['finished']} ({label})"
    display.say(f"{name}: {detail}")
    return Step(name, "reused", detail), cached


def figures_step(
    root: Path, cache: Cache, code: tuple[str, str], display: Display, judge: bool = True
) -> tuple[Step, dict[str, Any] | None]:
    """The figure rows of ``judge_baseline``, judged once per code, machine and baseline;
    with ``judge=False`` (``--no-run``) only what the cache holds."""
    name = "gate figures"
    path = root / bl.DEFAULT_PATH
    try:
        bl.load(path)
    except bl.CannotJudge as exc:
        display.say(f"{name}: skipped, {exc}")
        return Step(name, "skipped", str(exc)), None
    code_hash, label = code
    fp = gate_fingerprint(code_hash, path, FIGURES)
    reused = _reuse(cache, FIGURES, fp, name, "the verdict", label, display)
    if reused is not None:
        return reused
    if not judge:
        return Step(name, "not run", "no verdict cached for this code and baseline"), None
    display.say(f"{name}: recomputing the baseline's grid and comparing")
    start = time.perf_counter()
    try:
        verdict = gate.judge_baseline(path, throughput=False)
    except Exception as exc:  # a broken gate must not cost the other nine sections
        seconds = time.perf_counter() - start
        detail = f"{type(exc).__name__}: {exc}"
        display.say(f"{name}: failed, {detail}")
        return Step(name, "failed", detail, seconds), None
    seconds = time.perf_counter() - start
    entry = _entry(
        fp,
        label,
        seconds,
        rows=[r.as_dict() for r in verdict.rows],
        notes=list(verdict.notes),
        exit=verdict.code,
    )
    cache.add(FIGURES, entry)
    moved = sum(r.verdict != gate.OK for r in verdict.rows)
    detail = f"{verdict.word}: {moved} of {len(verdict.rows)} checks not ok ({label})"
    display.say(f"{name}: {detail}")
    return Step(name, "ran", detail, seconds), entry


def throughput_step(
    root: Path, cache: Cache, code: tuple[str, str], display: Display, measure: bool = True
) -> tuple[Step, dict[str, Any] | None]:
    """The train-step efficiency against the baseline (about 1 s of timing), once per code,
    machine and baseline; NOT JUDGED on another machine; with ``measure=False`` only what
    the cache holds (or the NOT JUDGED row, which needs no timing)."""
    name = "gate throughput"
    path = root / bl.DEFAULT_PATH
    try:
        base = bl.load(path)
    except bl.CannotJudge as exc:
        display.say(f"{name}: skipped, {exc}")
        return Step(name, "skipped", str(exc)), None
    differences = gate.environment_differences(base["environment"], bl.fingerprint())
    if differences:
        row = gate.throughput_not_judged(base, differences)
        detail = "the baseline is from another machine: throughput not judged here"
        display.say(f"{name}: {detail}")
        return Step(name, "skipped", detail), {"row": dataclasses.asdict(row)}
    code_hash, label = code
    fp = gate_fingerprint(code_hash, path, THROUGHPUT)
    reused = _reuse(cache, THROUGHPUT, fp, name, "the measurement", label, display)
    if reused is not None:
        return reused
    if not measure:
        return Step(name, "not run", "no measurement cached for this code and baseline"), None
    display.say(f"{name}: timing the training step against the baseline")
    start = time.perf_counter()
    now = bl.efficiency_samples()
    row = gate.judge_slowdown(
        "train-step efficiency",
        base["throughput"]["efficiency"],
        now["efficiency"],
        gate.EFFICIENCY_TOLERANCE,
        higher_is_slower=False,
    )
    seconds = time.perf_counter() - start
    entry = _entry(
        fp,
        label,
        seconds,
        row=dataclasses.asdict(row),
        rounds=len(now["efficiency"]),
        nonfinite_losses=now["nonfinite_losses"],
    )
    cache.add(THROUGHPUT, entry)
    detail = f"{row.verdict}: efficiency {row.change} in {seconds:.0f} s ({label})"
    display.say(f"{name}: {detail}")
    return Step(name, "ran", detail, seconds), entry


def gate_result(
    figures: dict[str, Any] | None, throughput: dict[str, Any] | None
) -> GateResult | None:
    """The figure rows and the throughput row as one verdict; None without figure rows."""
    if figures is None:
        return None
    rows = [gate.Row(**r) for r in figures["rows"]]
    figures_code = int(figures["exit"])
    if figures_code == gate.CANNOT_JUDGE:
        return GateResult(rows, figures_code, figures_code, list(figures["notes"]), None)
    if throughput is not None:
        rows.append(gate.Row(**throughput["row"]))
    code = gate.Verdict(rows).code
    return GateResult(rows, code, figures_code, list(figures["notes"]), throughput)


def cached_gate(db: Path, root: Path, code: tuple[str, str]) -> GateResult | None:
    """For ``--no-run``: the verdict judged for this code, machine and baseline, if any."""
    cache, quiet = Cache.beside(db), Display(io.StringIO(), live=False)
    _, figures = figures_step(root, cache, code, quiet, judge=False)
    _, throughput = throughput_step(root, cache, code, quiet, measure=False)
    return gate_result(figures, throughput)
