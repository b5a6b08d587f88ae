"""The scalars a watch logs: one per (statistic, module), under one stable tag scheme.

``stability/<stat>/<module>``: ``stat`` one of ``watch.STATS`` (``act_var``, ``grad_var``,
...), ``module`` the qualified module name (``transformer.h.0.attn``), at the watch's step
(the trainers: their global step). TensorBoard, Lightning's loggers and the Hugging Face
Trainer's reporters all receive these same names (the Trainer's TensorBoard writer prefixes
``train/`` to everything it logs).
"""

from collections.abc import Sequence

from stability.core.probe import LayerStats

# Logged by default: the scale of each module's output and gradient, and its alarm count.
# The precision fractions join them when the watch was given a precision.
LOGGED = ("act_var", "act_max_abs", "grad_var", "weight_grad_var", "nonfinite")
PREFIX = "stability"
Rows = Sequence[tuple[str, LayerStats]]  # (module, its statistics) for one recorded step


def tag(stat: str, module: str) -> str:
    """The scalar's name: ``stability/<stat>/<module>``."""
    return f"{PREFIX}/{stat}/{module}"


def scalars(rows: Rows, stats: Sequence[str] = LOGGED) -> dict[str, float]:
    """One recorded step's rows as ``{tag: value}`` (NaN kept: a logger shows the gap)."""
    return {tag(s, name): float(getattr(st, s)) for name, st in rows for s in stats}
