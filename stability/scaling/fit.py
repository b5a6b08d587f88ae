"""Log-log slopes of each figure against width (or depth), their standard errors, verdicts.

The slope of ``log y`` on ``log width`` is fitted by least squares with every seed's points
pooled (one point per width and seed), and its standard error is the regression's:
``se = sqrt(s^2 / Sxx)`` with ``s^2`` the residual variance on ``n - 2`` degrees of freedom.
Pooled, not slope-per-seed: the residuals hold both the seed-to-seed spread and any bend
away from a power law (finite-width corrections at the small widths), so a curve that is not
yet a power law widens its own tolerance instead of reading as drift; and with 3 seeds a
per-seed spread would have 2 degrees of freedom, a t quantile of ~60 at the tail needed.

The tolerance is ``k * se``, with ``k`` the two-sided Student-t quantile at a family-wise
false-alarm budget ``FALSE_ALARM`` split over every judged slope (Bonferroni):
``k = t_{n-2}^{-1}(1 - FALSE_ALARM / (2 M))``, ``M`` = modules x figures x steps. A check of
a correct model then names a drift in fewer than 1 run in 100.
"""

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from stability.scaling.exponents import JUDGED, expected, resolution, target

FALSE_ALARM = 0.01
MIN_POINTS = 3  # a slope and a residual: at least two widths and one spare point


def slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """(slope, standard error, points) of log y on log x; NaN when it cannot be fitted."""
    ok = np.isfinite(y) & (y > 0)
    lx, ly = np.log(x[ok]), np.log(y[ok])
    n = int(ok.sum())
    if n < MIN_POINTS or np.ptp(lx) == 0:
        return math.nan, math.nan, n
    sxx = float(((lx - lx.mean()) ** 2).sum())
    b = float(((lx - lx.mean()) * (ly - ly.mean())).sum() / sxx)
    resid = ly - ly.mean() - b * (lx - lx.mean())
    s2 = float((resid**2).sum() / (n - 2))
    return b, math.sqrt(s2 / sxx), n


def exponent(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """(exponent, standard error, degrees of freedom): ``log y = c + e log x + g x^-1/2``.

    The ``x^-1/2`` column absorbs the O(width^-1/2) relative fluctuation that Tensor Programs
    put on every Theta(1) quantity at finite width (and, on depth, the O(L^-1/2) share one
    block's own change has in the stream under Depth-muP); ``e`` is then the large-width exponent,
    and its standard error grows by as much as the two columns are alike over the widths
    measured. Fewer than 3 distinct sizes: the plain slope, on ``n - 2`` degrees of freedom."""
    ok = np.isfinite(y) & (y > 0)
    if len(np.unique(x[ok])) < 3 or int(ok.sum()) < 4:
        b, se, n = slope(x, y)
        return b, se, n - 2
    lx, ly = np.log(x[ok]), np.log(y[ok])
    design = np.column_stack([np.ones_like(lx), lx, x[ok] ** -0.5])
    coef, *_ = np.linalg.lstsq(design, ly, rcond=None)
    resid = ly - design @ coef
    df = len(ly) - 3
    s2 = float((resid**2).sum() / df)
    cov = s2 * np.linalg.inv(design.T @ design)
    return float(coef[1]), math.sqrt(max(float(cov[1, 1]), 0.0)), df


def k_of(tests: int, df: int, budget: float = FALSE_ALARM) -> float:
    """The Bonferroni-corrected two-sided t quantile for ``tests`` slopes."""
    return float(stats.t.ppf(1.0 - budget / (2 * max(tests, 1)), max(df, 1)))


def fit_slopes(rows: pd.DataFrame, axis: str, param: str, optimizer: str) -> pd.DataFrame:
    """One row per (fixed other size, module, figure, step): slope, se, tolerance, judgements.

    ``rows`` carry ``width``, ``depth``, ``seed``, ``module`` (for depth: the alias every
    depth shares), ``role`` and the figures."""
    other = "depth" if axis == "width" else "width"
    name = "module" if axis == "width" else "depth_module"
    out: list[dict[str, Any]] = []
    key: Any
    for key, g in rows.groupby([other, name, "step"], sort=False):
        at, module, step = key
        if g[axis].nunique() < 2:
            continue
        role = str(g["role" if axis == "width" else "depth_role"].iloc[0])
        for figure in (*JUDGED, "out_l1"):
            x, y = g[axis].to_numpy(float), g[figure].to_numpy(float)
            local, local_se, n = slope(x, y)
            b, se, df = exponent(x, y)
            out.append({"axis": axis, "at": int(at), "module": module, "role": role,
                        "step": int(step), "figure": figure, "slope": b, "se": se, "n": n,
                        "df": df, "local_slope": local, "local_se": local_se,
                        "lo": int(x.min()), "hi": int(x.max()),
                        "expected": expected(axis, param, optimizer, role, figure),
                        "target": target(axis, optimizer, role, figure),
                        "order": int(g["order"].min())})  # fmt: skip
    fits = pd.DataFrame(out)
    if fits.empty:
        return fits
    judged = fits["figure"].isin(JUDGED) & np.isfinite(fits["slope"]) & fits["target"].notna()
    tests = int(judged.sum())
    fits["k"] = [k_of(tests, int(df)) for df in fits["df"]]
    fits["tol"] = fits["k"] * fits["se"]
    fits["judged"] = judged
    fits["stable"] = _within(fits, "target")
    fits["as_predicted"] = _within(fits, "expected")
    return fits


def _within(fits: pd.DataFrame, column: str) -> pd.Series:
    ref = pd.to_numeric(fits[column], errors="coerce")
    ok = (fits["slope"] - ref).abs() <= fits["tol"]
    return ok.where(ref.notna() & np.isfinite(fits["slope"]), other=pd.NA)


FIGURE_WORDS = {"out_rms": "output", "out_l1": "output (l1)", "delta_rms": "output's change",
                "dwx_rms": "weight update's effect (dW x)"}  # fmt: skip


def cause(axis: str, role: str, figure: str, slope_: float, optimizer: str) -> str:
    """The likeliest reason a module drifts, in words."""
    grows = slope_ > 0
    if axis == "depth":
        if grows:
            return ("the residual branches are not multiplied by 1/sqrt(L) (Depth-muP) or 1/L "
                    "(CompleteP), or their lr is not scaled with depth")  # fmt: skip
        return "the residual branches or their lr are scaled down with depth twice"
    adam = optimizer != "sgd"
    if grows and role == "output":
        return "the output multiplier is not 1/width"
    if grows and role in ("hidden", "block"):
        rule = "x base/width (Adam)" if adam else "unscaled (SGD)"
        return f"the hidden weights' lr is not {rule}"
    if not grows and adam:
        return ("updates shrink with width: Adam's epsilon is not scaled by base/width (it "
                "outweighs the small gradients), or an lr is scaled down twice")  # fmt: skip
    if role == "input" and not adam:
        return "the input weights' SGD lr is not x width/base"
    return f"the {role} parameters' init or lr does not follow muP"


def verdicts(fits: pd.DataFrame, optimizer: str) -> pd.DataFrame:
    """One row per (axis, at, module): width-stable / depth-stable or drift, with the worst."""
    out: list[dict[str, Any]] = []
    if fits.empty:
        return pd.DataFrame(out)
    opt = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}.get(optimizer, optimizer)
    key: Any
    for key, g in fits[fits["judged"]].groupby(["axis", "at", "module"], sort=False):
        axis, at, module = key
        bad = g[g["stable"] == False]  # noqa: E712 (a nullable boolean)
        role = str(g["role"].iloc[0])
        row = {"axis": axis, "at": at, "module": module, "role": role,
               "order": int(g["order"].min())}  # fmt: skip
        if bad.empty and not bool((g["tol"] < resolution(optimizer)).any()):
            # Nothing drifts, but no exponent was pinned down tighter than the gap between
            # SP and muP: the check could not have told them apart (more sizes or seeds).
            at_most: Any = g["tol"].idxmin()
            loose: Any = g.loc[at_most]
            out.append(row | {"verdict": "inconclusive", "figure": loose["figure"],
                              "step": int(loose["step"]), "slope": float(loose["slope"]),
                              "se": float(loose["se"]), "tol": float(loose["tol"]),
                              "target": float(loose["target"]),
                              "local_slope": float(loose["local_slope"]),
                              "message": ""})  # fmt: skip
            continue
        if bad.empty:
            at_most = (g["slope"] - g["target"].astype(float)).abs().idxmax()
            worst: Any = g.loc[at_most]
            out.append(row | {"verdict": f"{axis}-stable", "figure": worst["figure"],
                              "step": int(worst["step"]), "slope": float(worst["slope"]),
                              "se": float(worst["se"]), "tol": float(worst["tol"]),
                              "target": float(worst["target"]),
                              "local_slope": float(worst["local_slope"]),
                              "message": ""})  # fmt: skip
            continue
        # The worst is the largest departure of the plain slope (what the plot shows), not
        # the most significant one (a LayerNorm's output barely moves: a tiny error and a
        # tiny, real exponent), nor the large-size extrapolation (noisy where it is large).
        excess = (bad["local_slope"] - bad["target"].astype(float)).abs()
        at_most = excess.idxmax()
        worst = bad.loc[at_most]
        b, step = float(worst["slope"]), int(worst["step"])
        steps = f"{step} {opt} step" + ("s" if step != 1 else "")
        local, aim = float(worst["local_slope"]), float(worst["target"])
        verb = "grows" if b > aim else "shrinks"
        if (local - aim) * (b - aim) <= 0:  # the plain slope points the other way: no verb
            verb = "scales"
        message = (
            f"{module} {FIGURE_WORDS[str(worst['figure'])]} {verb} as {axis}^{local:.2f} "
            f"over {axis}s {worst['lo']}-{worst['hi']} after {steps} (large-{axis} "
            f"exponent {b:.2f} +- {float(worst['tol']):.2f}, stable {aim:g}): "
            f"{cause(axis, role, str(worst['figure']), b, optimizer)}"
        )
        predicted = worst["as_predicted"]
        if pd.notna(worst["expected"]) and pd.notna(predicted) and bool(predicted):
            message += f" (as the parameterisation predicts: {axis}^{worst['expected']:g})"
        out.append(row | {"verdict": "drift", "figure": worst["figure"], "step": step,
                          "slope": b, "se": float(worst["se"]), "tol": float(worst["tol"]),
                          "target": float(worst["target"]), "local_slope": local,
                          "message": message})  # fmt: skip
    return pd.DataFrame(out)


def drifting(table: pd.DataFrame) -> Iterable[str]:
    """The messages of the modules that drift, the largest departure first."""
    if table.empty:
        return []
    bad = table[table["verdict"] == "drift"]
    order = (bad["local_slope"] - bad["target"].astype(float)).abs()
    order = order.sort_values(ascending=False)
    return [str(bad.loc[i, "message"]) for i in order.index]
