"""The exponents each parameterisation predicts: one table, derived in docs/scaling.md.

A figure ``y`` of a module (its output's RMS, the RMS of the output's change since step 0,
the RMS of its own weight update applied to its step-0 input) scales as ``width^e`` (or
``depth^e``) after a few training steps, to leading order as width (depth) grows. ``None``:
no power law is predicted (the figure mixes terms of different orders, or grows
geometrically). The width target is muP's row (0 everywhere: every coordinate stays Theta(1));
the depth target is Depth-muP's (the stream and its change stay Theta(1), each block adds
1/L of it, so a block's own update effect scales as depth^-1).

References: Yang et al. 2022, "Tensor Programs V" (muP, Tables 3 and 8); Yang et al. 2023,
"Tensor Programs VI" (Depth-muP, branch multiplier 1/sqrt(L)); Dey et al. 2025, "Don't be
lazy: CompleteP" (branch multiplier 1/L, Table 1).
"""

from stability.core.registry import lookup
from stability.errors import StabilityError

FIGURES = ("out_rms", "out_l1", "delta_rms", "dwx_rms")
JUDGED = ("out_rms", "delta_rms", "dwx_rms")  # out_l1 is drawn (mup's plot), not judged twice
ROLES = ("input", "hidden", "output", "vector", "fixed", "block", "inner-block")
PARAMS = ("sp", "mup", "depth-mup", "completep")
OPTIMIZERS = {"adam": "adam", "adamw": "adam", "sgd": "sgd"}  # AdamW scales as Adam does
AXES = ("width", "depth")

Row = dict[str, float | None]  # figure -> exponent


def _same(e: float | None) -> Row:
    return {"out_rms": e, "out_l1": e, "delta_rms": e, "dwx_rms": e}


def _r(out: float | None, delta: float | None, dwx: float | None) -> Row:
    return {"out_rms": out, "out_l1": out, "delta_rms": delta, "dwx_rms": dwx}


FLAT = {role: _same(0.0) for role in ROLES}
# On depth, "block" is the last block (its output is the whole stream) and "inner-block" any
# other: its output's change holds only its share of the blocks' changes (1/L each) on top
# of its input's, so no single power is predicted for it.
UNSCALED_DEPTH = {role: _same(None) for role in ROLES} | {
    "block": _r(None, None, 0.0), "inner-block": _r(None, None, 0.0)}  # fmt: skip
SCALED_DEPTH = {role: _same(0.0) for role in ROLES} | {
    "block": _r(0.0, 0.0, -1.0), "inner-block": _r(0.0, None, -1.0)}  # fmt: skip

# EXPECTED[axis][param][optimizer family][role][figure]
EXPECTED: dict[str, dict[str, dict[str, dict[str, Row]]]] = {
    "width": {
        "sp": {
            # Adam normalises each entry: dW ~ lr, so dW x sums fan_in aligned terms ~ width.
            # An output mixes its Theta(1) start with that growth (no single power), and a
            # change read after a LayerNorm saturates: those are None.
            "adam": {
                "input": _same(0.0),
                "hidden": _r(None, 1.0, 1.0),
                "output": _r(None, None, 1.0),
                "vector": _r(0.0, None, 0.0),
                "fixed": _same(None),
                "block": _r(None, 1.0, 1.0),
            },
            # SGD: the backward signal is ~ width^-1/2 per coordinate under 1/fan_in init.
            "sgd": {
                "input": _r(0.0, -0.5, -0.5),
                "hidden": _r(None, 0.5, 0.5),
                "output": _r(None, None, 1.0),
                "vector": _r(0.0, None, -0.5),
                "fixed": _same(None),
                "block": _same(None),
            },
        },
        "mup": {"adam": FLAT, "sgd": FLAT},
        "depth-mup": {"adam": FLAT, "sgd": FLAT},
        "completep": {"adam": FLAT, "sgd": FLAT},
    },
    "depth": {
        "sp": {"adam": UNSCALED_DEPTH, "sgd": UNSCALED_DEPTH},
        "mup": {"adam": UNSCALED_DEPTH, "sgd": UNSCALED_DEPTH},
        "depth-mup": {"adam": SCALED_DEPTH, "sgd": SCALED_DEPTH},
        "completep": {"adam": SCALED_DEPTH, "sgd": SCALED_DEPTH},
    },
}
TARGET = {"width": "mup", "depth": "depth-mup"}  # what "stable" means on each axis

# Residual branch exponent alpha (multiplier (L/L0)^-alpha) per parameterisation.
ALPHA = {"sp": 0.0, "mup": 0.0, "depth-mup": 0.5, "completep": 1.0}


def resolution(optimizer: str) -> float:
    """The smallest gap between SP's and muP's exponents for this optimiser (Adam 1, SGD
    1/2): a check whose every tolerance is wider cannot tell the two apart."""
    fam = family(optimizer)
    gaps = [abs(e - 0.0) for row in EXPECTED["width"]["sp"][fam].values()
            for e in row.values() if e is not None and e != 0.0]  # fmt: skip
    return min(gaps)


def check_param(name: str) -> str:
    return lookup("parameterisation", name, {p: p for p in PARAMS})


def family(optimizer: str) -> str:
    """``adam`` or ``sgd``: the optimiser's scaling family."""
    return lookup("optimizer", optimizer, OPTIMIZERS)


def expected(axis: str, param: str, optimizer: str, role: str, figure: str) -> float | None:
    """The exponent ``param`` predicts (None: no power law predicted)."""
    if axis not in AXES:
        raise StabilityError(f"unknown axis {axis!r}; expected one of {list(AXES)}")
    table = EXPECTED[axis][check_param(param)][family(optimizer)]
    return table.get(role, _same(None))[figure]


def target(axis: str, optimizer: str, role: str, figure: str) -> float | None:
    """The exponent a scale-stable model has (muP on width, Depth-muP on depth)."""
    return expected(axis, TARGET[axis], optimizer, role, figure)


def markdown_table() -> list[str]:
    """The table as docs/scaling.md prints it (a test keeps the two the same)."""

    def cell(v: float | None) -> str:
        return "—" if v is None else (f"{v:+g}" if v else "0")

    lines = ["| axis | parameterisation | optimiser | " + " | ".join(ROLES) + " |",
             "|---|---|---|" + "---|" * len(ROLES)]  # fmt: skip
    for axis, by_param in EXPECTED.items():
        for param, by_opt in by_param.items():
            for opt, table in by_opt.items():
                rows = [table.get(r, _same(None)) for r in ROLES]
                cells = [" / ".join(cell(row[f]) for f in JUDGED) for row in rows]
                lines.append(f"| {axis} | {param} | {opt} | " + " | ".join(cells) + " |")
    return lines
