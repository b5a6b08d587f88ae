"""The CI gate: judge this code against a baseline, each check on its own, and fail closed.

Exit codes: 0 pass, 1 regression (and nothing else), 2 cannot judge (missing, corrupt,
partial or wrong-version baseline, or a check that could not run). A check that cannot run
never passes.

- **Stability figures** (``stability.measure.baseline``: per-layer variances of a fixed CPU grid,
  fixed seeds, one thread) are judged on every machine. The rule is
  ``|now - base| <= rtol * |base|`` with the cross-machine ``FIGURE_RTOL`` of the cell's
  dtype, derived in ``docs/figure-tolerances.md`` from the spread measured across CPU
  kernels, BLAS code paths and thread counts, times a margin. No absolute floor: the figures
  span 1e-30 to 1e30 and any floor would hide a vanishing signal. The grid is rebuilt from
  the defaults the baseline recorded, so a changed ``MLPConfig`` default is named on its own.
- **Throughput** (the training step's efficiency against a GEMM timed beside it) only means
  something on the machine that wrote the baseline: it is judged when the environment
  fingerprint matches, and elsewhere reported as NOT JUDGED (pointing at ``--against``),
  which does not fail the gate by itself. The rule: slower than ``EFFICIENCY_TOLERANCE``
  by the medians AND a one-sided Mann-Whitney p < ``ALPHA``.

``stability.measure.gate_against`` adds the A/B judgement against another revision.
"""

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stability.measure import baseline as bl
from stability.measure.stats import ALPHA, mann_whitney_greater

PASS, REGRESSION, CANNOT_JUDGE = 0, 1, 2
EFFICIENCY_TOLERANCE = 0.25
# Cross-machine tolerance per dtype: 100x the largest spread measured across ATen CPU kernels,
# BLAS paths and threads (1.4e-6 in both float64 and float32), docs/figure-tolerances.md.
FIGURE_RTOL = {"float64": 1e-4, "float32": 1e-4, "bfloat16": 1.6e-2, "float16": 1e-3}

OK, REGRESSED, UNJUDGEABLE, NOT_JUDGED = "ok", "REGRESSION", "CANNOT JUDGE", "NOT JUDGED"
WORDS = {PASS: "PASS", REGRESSION: "REGRESSION", CANNOT_JUDGE: "CANNOT JUDGE"}


@dataclass(frozen=True)
class Row:
    """One line of the verdict table; ``reason`` says why a row is not ok (or not judged)."""

    check: str
    item: str
    baseline: str
    current: str
    change: str
    tolerance: str
    verdict: str  # OK, REGRESSED, UNJUDGEABLE or NOT_JUDGED
    reason: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Verdict:
    """The rows of every check, and the exit code they add up to."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why, for a reader: goes to stderr
    baseline: str | None = None
    against: str | None = None

    @property
    def code(self) -> int:
        if any(r.verdict == REGRESSED for r in self.rows):
            return REGRESSION
        if any(r.verdict == UNJUDGEABLE for r in self.rows) or not self.rows:
            return CANNOT_JUDGE
        return PASS

    @property
    def word(self) -> str:
        return WORDS[self.code]

    def extend(self, other: "Verdict") -> "Verdict":
        self.rows.extend(other.rows)
        self.notes.extend(other.notes)
        self.against = self.against or other.against
        return self


def cannot_judge(check: str, reason: str) -> Verdict:
    """A verdict of one row that could not be judged, with its reason."""
    return Verdict([Row(check, "-", "-", "-", "-", "-", UNJUDGEABLE, reason)], [reason])


# -- throughput -------------------------------------------------------------------------------
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
        REGRESSED if bad else OK,
        f"{slower - 1:.0%} slower, p={p:.2g}" if bad else "",
    )


def environment_differences(base_env: Mapping[str, Any], env: Mapping[str, Any]) -> list[str]:
    """``key: baseline -> here`` for each fingerprint field that differs."""
    return [
        f"{key}: {base_env.get(key)!r} -> {env.get(key)!r}"
        for key in sorted(set(base_env) | set(env))
        if base_env.get(key) != env.get(key)
    ]


def throughput_not_judged(base: Mapping[str, Any], differences: list[str]) -> Row:
    """Efficiency against a GEMM still depends on the CPU: say so instead of guessing."""
    reason = (
        "not judged here: the baseline's throughput was measured on another machine ("
        + "; ".join(differences)
        + "); judge speed with `stability gate --against REV`, which times both revisions "
        "on this machine"
    )
    eff = base["throughput"]["efficiency"]
    return Row(
        "throughput",
        "train-step efficiency",
        f"{statistics.median(eff):.4g}",
        "-",
        "-",
        f"slower by >{EFFICIENCY_TOLERANCE:.0%} and p<{ALPHA}",
        NOT_JUDGED,
        reason,
    )


# -- stability figures -----------------------------------------------------------------------
def _fmt(v: float) -> str:
    return f"{v:.6g}"


def close(base: float, now: float, rtol: float) -> bool:
    """``|now - base| <= rtol |base|``; NaN matches NaN and inf matches the same inf."""
    if math.isnan(base) or math.isnan(now):
        return math.isnan(base) and math.isnan(now)
    if math.isinf(base) or math.isinf(now):
        return base == now
    return abs(now - base) <= rtol * abs(base)


def default_rows(base_defaults: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[Row]:
    """A changed ``MLPConfig`` default is a regression named by itself."""
    return [
        Row(
            "default",
            f"MLPConfig.{key}",
            str(base_defaults.get(key)),
            str(defaults.get(key)),
            "changed",
            "equal",
            REGRESSED,
            f"the default {key} changed from {base_defaults.get(key)!r} to {defaults.get(key)!r}",
        )
        for key in sorted(set(base_defaults) | set(defaults))
        if base_defaults.get(key) != defaults.get(key)
    ]


def compare_figures(
    base: Mapping[str, Any], now: Mapping[str, Any], check: str = "figures"
) -> list[Row]:
    """Per cell and figure: one ok row, or one row per layer beyond the tolerance."""
    rows: list[Row] = []
    for name in sorted(base.keys() - now.keys()):
        rows.append(
            Row(
                check,
                name,
                "present",
                "missing",
                "-",
                "-",
                REGRESSED,
                f"cell {name} is no longer measured",
            )
        )
    for name in sorted(base.keys() & now.keys()):
        b, n = base[name], now[name]
        rtol = FIGURE_RTOL.get(str(b.get("dtype")), FIGURE_RTOL["float32"])
        for fig in bl.FIGURES:
            bv, nv = b.get(fig, []), n.get(fig, [])
            if len(bv) != len(nv):
                rows.append(
                    Row(
                        check,
                        f"{name} {fig}",
                        f"{len(bv)} layers",
                        f"{len(nv)} layers",
                        "changed",
                        "equal",
                        REGRESSED,
                        "the number of layers changed",
                    )
                )
                continue
            bad = False
            for layer, (x, y) in enumerate(zip(bv, nv, strict=True), start=1):
                x, y = float(x), float(y)
                if close(x, y, rtol):
                    continue
                bad = True
                rel = (y - x) / abs(x) if x and math.isfinite(x) else math.inf
                change = f"{rel:+.2%}" if math.isfinite(rel) else "-"
                rows.append(
                    Row(
                        check,
                        f"{name} {fig} L{layer}",
                        _fmt(x),
                        _fmt(y),
                        change,
                        f"rtol {rtol:g}",
                        REGRESSED,
                        f"layer {layer} {fig} moved {change} (beyond rtol {rtol:g})",
                    )
                )
            if not bad:
                rows.append(
                    Row(
                        check,
                        f"{name} {fig}",
                        f"{len(bv)} layers",
                        "same",
                        "0",
                        f"rtol {rtol:g}",
                        OK,
                    )
                )
    return rows


def measured_figures(cells: list[Any]) -> dict[str, dict[str, Any]]:
    """The figures of ``cells`` with this code (a hook for tests)."""
    return bl.stability_figures(cells)


def judge_baseline(path: Path | str = bl.DEFAULT_PATH, throughput: bool = True) -> Verdict:
    """Figures everywhere; throughput only where the baseline's fingerprint matches."""
    try:
        base = bl.load(path)
    except bl.CannotJudge as exc:
        return cannot_judge("baseline", f"cannot judge: {exc}")
    verdict = Verdict(baseline=str(path))
    verdict.rows += default_rows(base["defaults"], bl.defaults())
    cells = bl.recorded_grid(base["defaults"])
    verdict.rows += compare_figures(base["stability"], measured_figures(cells))
    differences = environment_differences(base["environment"], bl.fingerprint())
    if differences:
        verdict.notes.append(
            "note: baseline from another environment (" + "; ".join(differences) + "): "
            "figures judged with cross-machine tolerances"
        )
    if not throughput:
        return verdict
    if differences:
        verdict.rows.append(throughput_not_judged(base, differences))
        return verdict
    now = bl.efficiency_samples()
    verdict.rows.append(
        judge_slowdown(
            "train-step efficiency",
            base["throughput"]["efficiency"],
            now["efficiency"],
            EFFICIENCY_TOLERANCE,
            higher_is_slower=False,
        )
    )
    if now["nonfinite_losses"]:
        verdict.notes.append(f"note: {now['nonfinite_losses']} non-finite losses in timed steps")
    return verdict
