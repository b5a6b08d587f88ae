"""``stability criticality --activation tanh --depth 50``: the best init for a depth-L net.

Prints the recommended sigma_w^2 (and the gain to pass to torch's init), sigma_b^2, and why:
the point of the critical line chi_1 = 1 whose predicted Jacobian spectrum stays narrow over
``--depth`` layers (``stability.core.best_init``). ``--json``: the same as one object.
"""

import argparse
import math
import sys

from stability.cli.args import SubParsers
from stability.cli.json_output import add_json_argument, emit
from stability.core.activations import ACTIVATIONS
from stability.core.registry import lookup
from stability.errors import StabilityError

WEIGHTS = ("orthogonal", "gaussian")


def add_criticality(sub: SubParsers) -> None:
    p = sub.add_parser(
        "criticality",
        help="the best (sigma_w^2, sigma_b^2) for a network of a given depth: edge of chaos",
        description="Mean-field theory of the edge of chaos (Poole et al. 2016, Schoenholz et "
        "al. 2017) and the Jacobian's free-probability spectrum (Pennington et al. 2017): the "
        "point of the critical line chi_1 = 1 that keeps the input-output Jacobian's singular "
        "values within a factor of each other over --depth layers.",
    )
    p.add_argument("--activation", default="tanh", help="activation name (default: tanh)")
    p.add_argument("--depth", type=int, default=50, help="layers (default: 50)")
    p.add_argument(
        "--weights",
        default="orthogonal",
        help="weight law: orthogonal or gaussian (default: orthogonal)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=1.0,
        help="largest normalised variance of J J^T's eigenvalues allowed (default: 1, one "
        "Gaussian layer's spread)",
    )
    p.add_argument(
        "--phase",
        action="store_true",
        help="also print the phase diagram: the critical line and xi_c over a "
        "(sigma_w^2, sigma_b^2) grid, for this activation",
    )
    add_json_argument(p, "criticality")
    p.set_defaults(handler=_cmd_criticality)


def _cmd_criticality(args: argparse.Namespace) -> int:
    lookup("activation", args.activation, ACTIVATIONS)
    if args.weights not in WEIGHTS:
        raise StabilityError(f"unknown weights {args.weights!r}; expected one of {list(WEIGHTS)}")
    if args.depth < 1:
        raise StabilityError(f"depth must be >= 1, got {args.depth}")
    if not (math.isfinite(args.budget) and args.budget > 0):
        raise StabilityError(f"budget must be a positive number, got {args.budget}")
    from stability.core.best_init import best_init
    from stability.measure.threads import threads

    print(f"solving the critical line for {args.activation}...", file=sys.stderr)
    with threads(1):  # small float64 tensors: one thread is fastest and the same everywhere
        rec = best_init(args.activation, args.depth, args.weights, args.budget)
        phase = _phase(args.activation) if args.phase else None
    if args.json:
        row: dict[str, object] = _plain(rec.as_dict())
        if phase is not None:
            row["phase_diagram"] = phase
        emit("criticality", {"exit_code": 0, **row})
        return 0
    if phase is not None:
        print(
            "sigma_b^2  critical sigma_w^2   (then per grid point: sigma_w^2 sigma_b^2 phase xi_c)"
        )
        for b, w in phase["critical_line"]:
            print(f"{b:9.3g}  {w:.4g}")
        for point in phase["grid"]:
            print(f"  {point['sigma_w2']:5.2f} {point['sigma_b2']:5.2f} {point['phase']:8s} "
                  f"{_short(point['xi_c'])}")  # fmt: skip
    if not math.isfinite(rec.sigma_w2):
        print(f"{args.activation}: {rec.why}")
        return 0
    print(f"{args.activation}, depth {args.depth}, {args.weights} weights:")
    print(f"  sigma_w^2 = {rec.sigma_w2:.4g}  (gain {rec.gain:.4g})")
    print(f"  sigma_b^2 = {rec.sigma_b2:.3g}")
    print(f"  q* = {rec.q_star:.3g}, chi_1 = {rec.chi_1:.6f}")
    print(
        f"  predicted J J^T at depth {args.depth}: mean {rec.jj_mean:.4g}, normalised "
        f"variance {rec.jj_normalised_var:.3g}"
    )
    print(f"  why: {rec.why}")
    return 0


PHASE_SW2 = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
PHASE_SB2 = (0.0, 0.05, 0.1, 0.2, 0.5)


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _plain(row: dict[str, object]) -> dict[str, object]:
    """JSON has no inf/NaN: those become strings."""
    return {
        k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()
    }


def _phase(activation: str) -> dict[str, list]:  # type: ignore[type-arg]
    from stability.core.criticality import critical_sigma_w2, mean_field

    line = critical_sigma_w2(activation, list(PHASE_SB2)).tolist()
    sw2 = [w for w in PHASE_SW2 for _ in PHASE_SB2]
    sb2 = [b for _ in PHASE_SW2 for b in PHASE_SB2]
    grid = [_plain(p.as_dict()) for p in mean_field(activation, sw2, sb2)]
    return {
        "critical_line": [list(pair) for pair in zip(PHASE_SB2, line, strict=True)],
        "grid": grid,
    }
