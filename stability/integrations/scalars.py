"""The scalars a watch logs: one per (statistic, module), under one stable tag scheme.

``stability/<stat>/<module>``: ``stat`` one of ``watch.STATS`` (``act_var``, ``grad_var``,
...), ``module`` the qualified module name (``transformer.h.0.attn``), at the watch's step
(the trainers: their global step). TensorBoard, Lightning's loggers and the Hugging Face
Trainer's reporters all receive these same names (the Trainer's TensorBoard writer prefixes
``train/`` to everything it logs).
"""

from collections.abc import Sequence

from stability.core.probe import LayerStats
from stability.errors import StabilityError

# LayerStats fields kept per module and step (the MLP-only pre-activation ones are left out).
STATS = tuple(c for c in LayerStats.columns() if c not in ("layer", "preact_mean", "preact_var"))

# Logged by default: the scale of each module's output and gradient, and its alarm count.
# The precision fractions join them when the watch was given a precision.
LOGGED = ("act_var", "act_max_abs", "grad_var", "weight_grad_var", "nonfinite")
PREFIX = "stability"
Rows = Sequence[tuple[str, LayerStats]]  # (module, its statistics) for one recorded step


def check_stats(stats: Sequence[str]) -> tuple[str, ...]:
    """``stats`` as a tuple, each one of ``STATS``, or a one-line error naming the bad one."""
    if isinstance(stats, str):
        stats = (stats,)
    unknown = [s for s in stats if s not in STATS]
    if unknown:
        raise StabilityError(f"unknown stat {unknown[0]!r}; valid choices: {list(STATS)}")
    return tuple(stats)


def tag(stat: str, module: str) -> str:
    """The scalar's name: ``stability/<stat>/<module>``."""
    return f"{PREFIX}/{stat}/{module}"


def scalars(rows: Rows, stats: Sequence[str] = LOGGED) -> dict[str, float]:
    """One recorded step's rows as ``{tag: value}`` (NaN kept: a logger shows the gap)."""
    return {tag(s, name): float(getattr(st, s)) for name, st in rows for s in stats}
