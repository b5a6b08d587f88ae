"""``stability criticality --activation tanh --depth 50``: the best init for a depth-L net.

Prints the recommended sigma_w^2 (and the gain to pass to torch's init), sigma_b^2, and why:
the point of the critical line chi_1 = 1 whose predicted Jacobian spectrum stays narrow over
``--depth`` layers (``stability.core.best_init``). ``--json``: the same as one object.
"""

import argparse
import json
import math
import sys

from stability.cli.args import SubParsers
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
    p.add_argument("--json", action="store_true", help="print one JSON object")
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
    if args.json:
        row = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v))
               for k, v in rec.as_dict().items()}  # fmt: skip
        print(json.dumps(row, indent=2))
        return 0
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
