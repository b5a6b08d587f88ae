"""``stability doctor --dtype float8``: the flags, their checks, and what is printed.

float8 is HYBRID (E4M3 forward, E5M2 backward), emulated in the float32 carrier on every
matmul (``core.lowp.training``); ``--recipe`` picks the scale, ``--flush-threshold`` how much
of a gradient may flush before its module is named. Shared by the MLP and ``--model`` paths.
"""

import argparse
from typing import Any

import pandas as pd

from stability.core.lowp.recipes import get_recipe
from stability.core.lowp.training_events import (
    FLUSH_THRESHOLD,
    Fp8Event,
    first_gradient_event,
    no_event_line,
)
from stability.core.registry import lookup
from stability.errors import StabilityError

FLOAT8 = "float8"
FP8_ALIASES = {"float8": FLOAT8, "fp8": FLOAT8, "hybrid": FLOAT8}
STUDIES = ("lr_search", "lr_map", "cost", "loss_scaling")  # trials that run without fp8


def add_fp8_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--recipe",
        default=None,
        help="with --dtype float8: the scaling recipe, none, tensor (dynamic per-tensor "
        "amax), row or delayed:H (default: tensor)",
    )
    p.add_argument(
        "--flush-threshold",
        type=float,
        default=None,
        help="with --dtype float8: a gradient with more than this fraction of its values "
        f"flushed to zero names its module (default: {FLUSH_THRESHOLD:g})",
    )


def check_dtype(args: argparse.Namespace, dtypes: tuple[str, ...]) -> bool:
    """Resolve ``--dtype`` (float8's aliases to float8) against ``dtypes`` plus float8, check
    the fp8 flags; True when training in float8. One-line errors, before any work."""
    table = {**{d: d for d in dtypes}, **FP8_ALIASES}
    args.dtype = lookup("dtype", args.dtype, table)
    fp8 = args.dtype == FLOAT8
    if not fp8:
        for flag, key in (("--recipe", "recipe"), ("--flush-threshold", "flush_threshold")):
            if getattr(args, key) is not None:
                raise StabilityError(f"{flag} works with --dtype float8 only, not {args.dtype}")
        return False
    if args.loss_scaling:
        raise StabilityError(
            "--loss-scaling needs a reduced dtype; got 'float8', expected one of "
            "['bfloat16', 'float16'] (float8 scales each tensor by its --recipe)"
        )
    args.recipe = get_recipe(args.recipe or "tensor").name
    t = FLUSH_THRESHOLD if args.flush_threshold is None else args.flush_threshold
    if not 0 <= t < 1:
        raise StabilityError(f"--flush-threshold must be in [0, 1), got {t}")
    args.flush_threshold = t
    return True


def refuse_studies(args: argparse.Namespace) -> None:
    """The studies train fresh runs outside the emulation: refused rather than mislabelled."""
    for key in STUDIES:
        if getattr(args, key, False):
            flag = "--" + key.replace("_", "-")
            raise StabilityError(f"{flag} does not run under --dtype float8; drop one of them")


def fp8_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def fp8_event(rows: list[dict[str, Any]], args: argparse.Namespace) -> Fp8Event | None:
    event: Fp8Event | None = first_gradient_event(rows, args.flush_threshold)
    return event


def print_fp8(rows: list[dict[str, Any]], args: argparse.Namespace, steps: int) -> Fp8Event | None:
    """The per-module worst case over steps, then the first gradient event (or none)."""
    print(f"fp8: hybrid (E4M3 forward, E5M2 backward), recipe {args.recipe}, emulated in "
          "the float32 carrier on every matmul")  # fmt: skip
    event = fp8_event(rows, args)
    if rows:
        t = fp8_table(rows)
        t = t[t["tensor"] != "output"]  # the output stays in the carrier: not an operand
        worst = t.pivot_table(index=["order", "module"], columns="tensor",
                              values=["flush_frac", "overflow_frac", "zero_frac"],
                              aggfunc="max")  # fmt: skip
        label = {"flush_frac": "flushed", "overflow_frac": ">max", "zero_frac": "zero"}
        pairs: list[Any] = worst.columns.tolist()  # (value, tensor) pairs
        worst.columns = [f"{w} {label[e]}" for e, w in pairs]
        order = [f"{w} {e}" for w in ("input", "weight") for e in ("flushed", ">max")]
        order += ["grad flushed", "grad >max", "grad zero"]  # zero: flushed here or upstream
        worst = worst[[c for c in order if c in worst.columns]].droplevel("order")
        print("fraction of each operand flushed to zero / beyond max in fp8, worst step "
              "(grad zero: zero in fp8, flushed there or already zero on arrival):")  # fmt: skip
        print(worst.to_string(float_format=lambda v: f"{v:.3g}"))
    print(event.line() if event is not None else no_event_line(args.recipe, steps,
                                                               args.flush_threshold))  # fmt: skip
    dead = dead_below(rows, event)
    if dead:
        print(f"  below it, {len(dead)} module(s) got an all-zero gradient at step "
              f"{event.step if event else 0}: {', '.join(dead)}")  # fmt: skip
    return event


def dead_below(rows: list[dict[str, Any]], event: Fp8Event | None) -> list[str]:
    """The modules whose gradient was entirely zero in the event's step (none without one):
    the flush upstream left nothing to reach them."""
    if event is None or event.kind != "underflow":
        return []
    grads = [r for r in rows if r["tensor"] == "grad" and r["step"] == event.step]
    return [str(r["module"]) for r in sorted(grads, key=lambda r: -r["order"])
            if r["zero_frac"] >= 1.0]  # fmt: skip
