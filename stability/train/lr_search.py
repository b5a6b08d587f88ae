"""The largest stable learning rate, and the stable/divergent map over learning rate x init.

Search: bracket by doubling (or halving) from a start value until one learning rate trains
and its double diverges, then bisect in log space until the bracket is ``rtol`` wide. Each
trial trains for a bounded number of steps. A trial *diverges* if the loss becomes non-finite
or ends above where it started (mean of the last tenth of the steps against the first loss):
the same rule for an MLP and for a quadratic.

On the quadratic ``f(w) = w^T A w / 2`` gradient descent multiplies the component along each
eigenvector of ``A`` by ``1 - lr * lambda`` per step, so it is stable iff ``lr < 2 /
lambda_max`` (the notes' "learning rate too large -> inf"). Below the bound every component
shrinks, so the rule never calls a stable rate divergent; above it by a relative ``d`` the top
component grows by ``(1 + 2d)^2`` per step and outgrows the rest within ``T`` steps once
``d > ln(dim) / (4 T)``: 0.4 % for dim 32, T 200. ``random_quadratic`` makes test problems.
"""

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import torch

from stability.core.config import MLPConfig
from stability.errors import StabilityError
from stability.train.trainer import TrainConfig, max_lr, train

TAIL_FRACTION = 0.1  # the end of a trial: its last tenth of steps
DEFAULT_RTOL = 1e-3  # bisect until the bracket's ratio is below 1 + rtol
MAX_BRACKET_STEPS = 60  # doublings or halvings before giving up (2^60 ~ 1e18)
QUADRATIC_STEPS = 200
DEFAULT_MAP_LRS = tuple(10.0 ** (k / 2) for k in range(-6, 3))  # 1e-3 ... 10


def diverged(losses: Sequence[float]) -> bool:
    """Non-finite anywhere, or the tail mean above the first loss."""
    if not losses or not all(math.isfinite(v) for v in losses):
        return True
    tail = losses[-max(1, int(len(losses) * TAIL_FRACTION)) :]
    return sum(tail) / len(tail) > losses[0]


@dataclass(frozen=True)
class SearchResult:
    """Largest learning rate found stable, smallest found divergent, and every trial."""

    lr: float  # largest stable (0.0 if none was)
    lr_divergent: float  # smallest divergent (inf if none was)
    trials: int
    bracketed: bool  # both ends found: lr_divergent / lr <= 1 + rtol
    history: list[tuple[float, bool]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "largest_stable_lr": self.lr,
            "smallest_divergent_lr": self.lr_divergent,
            "trials": self.trials,
            "bracketed": self.bracketed,
        }


def largest_stable_lr(
    diverges: Callable[[float], bool],
    start: float = 1e-2,
    rtol: float = DEFAULT_RTOL,
    max_bracket_steps: int = MAX_BRACKET_STEPS,
) -> SearchResult:
    """Bracket (doubling up, or halving down) then bisect in log space."""
    if not (math.isfinite(start) and start > 0):
        raise StabilityError(f"start learning rate must be finite and > 0, got {start}")
    if not (0 < rtol < 1):
        raise StabilityError(f"rtol must be in (0, 1), got {rtol}")
    history: list[tuple[float, bool]] = []

    def trial(lr: float) -> bool:
        bad = diverges(lr)
        history.append((lr, bad))
        return bad

    lo, hi = 0.0, math.inf
    lr = start
    if trial(lr):
        hi = lr
        for _ in range(max_bracket_steps):
            lr /= 2.0
            if not trial(lr):
                lo = lr
                break
            hi = lr
    else:
        lo = lr
        for _ in range(max_bracket_steps):
            lr *= 2.0
            if trial(lr):
                hi = lr
                break
            lo = lr
    if lo == 0.0 or math.isinf(hi):
        return SearchResult(lo, hi, len(history), False, history)
    while hi / lo > 1.0 + rtol:
        mid = math.sqrt(lo * hi)
        if trial(mid):
            hi = mid
        else:
            lo = mid
    return SearchResult(lo, hi, len(history), True, history)


# -- quadratic problems -------------------------------------------------------------------


@dataclass(frozen=True)
class Quadratic:
    """``f(w) = w^T A w / 2`` in float64, started at ``w0``; its Hessian is ``A``."""

    hessian: torch.Tensor  # (dim, dim), symmetric positive definite
    w0: torch.Tensor  # (dim,)

    @property
    def lambda_max(self) -> float:
        """Largest Hessian eigenvalue, computed from the matrix (not from its construction)."""
        return float(torch.linalg.eigvalsh(self.hessian)[-1])

    def losses(self, lr: float, steps: int = QUADRATIC_STEPS) -> list[float]:
        """Gradient descent losses, one per step (the loss before each update)."""
        a, w = self.hessian, self.w0.clone()
        out = []
        for _ in range(steps):
            g = a @ w
            out.append(0.5 * float(w @ g))
            w = w - lr * g
        return out

    def diverges(self, lr: float, steps: int = QUADRATIC_STEPS) -> bool:
        """The search's rule (``diverged``) applied to gradient descent on this quadratic."""
        return diverged(self.losses(lr, steps))


def random_quadratic(dim: int, cond: float, seed: int) -> Quadratic:
    """A random SPD Hessian with condition number ``cond`` and a random overall scale.

    Eigenvalues are log-spaced over ``[s, s * cond]`` with ``s = exp(U(-2, 2))``, in a Haar-
    random basis; ``w0`` has equal weight on every eigenvector, so the top one holds at least
    ``1 / dim`` of the initial loss.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise StabilityError(f"dim must be an integer >= 1, got {dim!r}")
    if not (math.isfinite(cond) and cond >= 1):
        raise StabilityError(f"cond must be finite and >= 1, got {cond}")
    gen = torch.Generator().manual_seed(seed)
    scale = math.exp(4.0 * float(torch.rand((), generator=gen, dtype=torch.float64)) - 2.0)
    eig = scale * torch.logspace(0.0, math.log10(cond), dim, dtype=torch.float64)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    a = (q * eig) @ q.T
    a = 0.5 * (a + a.T)
    w0 = q @ torch.ones(dim, dtype=torch.float64) / math.sqrt(dim)
    return Quadratic(a, w0)


# -- MLP trials, grids and the map --------------------------------------------------------


def mlp_diverges(cfg: TrainConfig, steps: int | None = None) -> Callable[[float], bool]:
    """The trial for an MLP config: train ``steps`` steps at ``lr`` and apply ``diverged``."""

    def run(lr: float) -> bool:
        if lr > max_lr(cfg.model):  # a step size the weights' dtype cannot hold overflows
            return True
        return diverged(train(replace(cfg, lr=lr), steps).losses)

    return run


def lr_search_grid(
    configs: Iterable[TrainConfig],
    steps: int | None = None,
    start: float = 1e-2,
    rtol: float = 0.05,
) -> pd.DataFrame:
    """One row per config: its fields and the search result (bounded ``steps`` per trial)."""
    rows = []
    for cfg in configs:
        result = largest_stable_lr(mlp_diverges(cfg, steps), start=start, rtol=rtol)
        row = cfg.as_dict()
        row.pop("lr")
        row["trial_steps"] = cfg.steps if steps is None else steps
        row.update(result.as_dict())
        rows.append(row)
    return pd.DataFrame(rows)


def lr_map(
    base: TrainConfig,
    lrs: Sequence[float] = DEFAULT_MAP_LRS,
    inits: Sequence[str] = ("kaiming_normal", "xavier_normal", "standard_normal"),
    activations: Sequence[str] = ("relu", "tanh"),
    steps: int | None = None,
) -> pd.DataFrame:
    """Tidy stable/divergent table over activation x init x learning rate."""
    for lr in lrs:
        if not (math.isfinite(lr) and lr > 0):
            raise StabilityError(f"learning rates must be finite and > 0, got {lr}")
    rows = []
    for act in activations:
        for init in inits:
            model = MLPConfig(**{**base.model.as_dict(), "activation": act, "init": init})
            for lr in lrs:
                cfg = replace(base, model=model, lr=lr)
                res = train(cfg, steps)
                rows.append(
                    {
                        **cfg.as_dict(),
                        "trial_steps": len(res.losses) if steps is None else steps,
                        "stable": not diverged(res.losses),
                        "initial_loss": res.losses[0],
                        "final_loss": res.final_loss,
                        "nonfinite_at": res.diverged_at,
                    }
                )
    return pd.DataFrame(rows)


def lr_map_figure(table: pd.DataFrame) -> Any:
    """Stable (filled) / divergent (cross) cells, one panel per activation; a Figure (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    acts = list(dict.fromkeys(table["activation"]))
    inits = list(dict.fromkeys(table["init"]))
    fig = Figure(figsize=(4.0 * max(1, len(acts)), 0.6 * len(inits) + 1.6))
    axes = fig.subplots(1, max(1, len(acts)), squeeze=False)[0]
    for ax, act in zip(axes, acts, strict=False):
        sub = table[table["activation"] == act]
        for y, init in enumerate(inits):
            cell = sub[sub["init"] == init]
            ok = cell[cell["stable"]]
            bad = cell[~cell["stable"]]
            ax.scatter(ok["lr"], [y] * len(ok), marker="s", s=80, color="tab:green")
            ax.scatter(bad["lr"], [y] * len(bad), marker="x", s=60, color="tab:red")
        ax.set_xscale("log")
        ax.set_yticks(range(len(inits)), inits)
        ax.set_xlabel("learning rate")
        ax.set_title(f"{act}: stable (green) / divergent (red)", fontsize=9)
        ax.set_ylim(-0.5, len(inits) - 0.5)
    fig.tight_layout()
    return fig
