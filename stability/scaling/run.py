"""The coordinate check's loop: every depth x width x seed built, parameterised, trained.

A ``CoordSpec`` holds strings and numbers only (printable, storable); ``run_check`` builds
each model through the user-model entry point (``usermodel.spec.load_setup``: the same
one-line errors as ``probe``), classifies its parameters against the same model built at
twice the width on the meta device (shapes only), applies the parameterisation, trains and
measures, then fits and judges (``fit``).
"""

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from stability.errors import StabilityError
from stability.measure.threads import threads
from stability.scaling import mlp
from stability.scaling.exponents import check_param, family
from stability.scaling.fit import fit_slopes, verdicts
from stability.scaling.measure import depth_alias, is_block, train_and_measure
from stability.scaling.parametrize import check_rules, parametrize
from stability.usermodel.spec import load_model, load_setup

MAX_RUNS = 200  # models to train without --yes
MAX_WIDTH = 16384
MAX_STEPS = 100


@dataclass(frozen=True)
class CoordSpec:
    """What to check: the model, the sizes, the training, the parameterisation."""

    model: str = mlp.MODEL_REF
    input: str = mlp.INPUT_REF
    target: str | None = None
    loss: str | None = "mse"
    model_args: tuple[tuple[str, Any], ...] = ()
    widths: tuple[int, ...] = (64, 128, 256, 512, 1024)
    depths: tuple[int, ...] = ()
    steps: tuple[int, ...] = (1, 2, 3)
    optimizer: str = "adam"
    lr: float = 1e-2
    eps: float = 1e-8
    seeds: int = 3
    param: str = "mup"
    base_width: int | None = None
    base_depth: int | None = None
    width_arg: str = "width"
    depth_arg: str = "depth"
    branches: tuple[str, ...] = ()
    without: tuple[str, ...] = ()
    device: str = "cpu"
    threads: int = 1  # small models: one intra-op thread beats several fighting over 2 cores
    yes: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def validate(spec: CoordSpec) -> None:
    """One line for each kind of bad input, before anything is built."""
    check_param(spec.param)
    family(spec.optimizer)
    check_rules(spec.without)
    for flag, sizes in (("--widths", spec.widths), ("--depths", spec.depths)):
        bad = [s for s in sizes if s < 1]
        if bad:
            raise StabilityError(f"{flag}: sizes must be >= 1, got {bad[0]}")
        if len(set(sizes)) != len(sizes):
            raise StabilityError(f"{flag}: each size at most once, got {list(sizes)}")
    if len(spec.widths) < 2 and len(spec.depths) < 2:
        raise StabilityError("a slope needs at least two --widths (or two --depths), got "
                             f"widths {list(spec.widths)}, depths {list(spec.depths)}")  # fmt: skip
    if max(spec.widths) > MAX_WIDTH and not spec.yes:
        raise StabilityError(f"--widths up to {max(spec.widths)} (over {MAX_WIDTH}): pass --yes")
    if spec.steps and max(spec.steps) > MAX_STEPS and not spec.yes:
        raise StabilityError(f"--steps up to {max(spec.steps)} (over {MAX_STEPS}): pass --yes")
    if not spec.steps or min(spec.steps) < 1:
        raise StabilityError(f"--steps must be >= 1 (step 0 is the reference), got "
                             f"{list(spec.steps)}")  # fmt: skip
    if spec.threads < 0:
        raise StabilityError(f"--threads must be >= 0 (0: torch's own count), got {spec.threads}")
    if spec.seeds < 1:
        raise StabilityError(f"--seeds must be >= 1, got {spec.seeds}")
    if not spec.lr > 0 or not spec.eps >= 0:
        raise StabilityError(f"--lr must be > 0 and --eps >= 0, got {spec.lr}, {spec.eps}")
    runs = len(spec.widths) * max(len(spec.depths), 1) * spec.seeds
    if runs > MAX_RUNS and not spec.yes:
        raise StabilityError(f"{runs} models to train (over {MAX_RUNS}): fewer --widths, "
                             "--depths or --seeds, or pass --yes")  # fmt: skip


def _kwargs(spec: CoordSpec, width: int, depth: int | None) -> dict[str, Any]:
    kwargs = dict(spec.model_args) | {spec.width_arg: width}
    return kwargs | ({spec.depth_arg: depth} if depth is not None else {})


def _reference(spec: CoordSpec, width: int, depth: int | None) -> nn.Module | None:
    """The model at twice the width, shapes only (meta device; None if it cannot be)."""
    with contextlib.suppress(Exception), torch.device("meta"):
        return load_model(spec.model, _kwargs(spec, 2 * width, depth))
    return None


def run_check(spec: CoordSpec, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every size and seed; return ``rows``, ``fits``, ``verdicts`` and ``notes``."""
    validate(spec)
    with threads(spec.threads):
        return _run(spec, progress)


def _run(spec: CoordSpec, progress: Callable[[str], None] | None) -> dict[str, Any]:
    depths: list[int | None] = list(spec.depths) or [None]
    base_w = spec.base_width or min(spec.widths)
    base_d = spec.base_depth or (min(spec.depths) if spec.depths else None)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    total, done, t0 = len(depths) * len(spec.widths) * spec.seeds, 0, time.perf_counter()
    for depth in depths:
        for width in spec.widths:
            for seed in range(spec.seeds):
                setup = load_setup(spec.model, _kwargs(spec, width, depth), spec.input,
                                   spec.target, spec.loss, seed=seed, bounded=True,
                                   quiet=True)  # fmt: skip
                run = setup.to(spec.device)
                plan = parametrize(run.model, base_w, width, spec.optimizer, spec.lr,
                                   spec.eps, spec.param, _reference(spec, width, depth),
                                   depth, base_d, list(spec.branches) or None,
                                   spec.without)  # fmt: skip
                notes += [n for n in plan.notes if n not in notes]
                roles = plan.module_roles
                opt = plan.optimizer(spec.optimizer)
                torch.manual_seed(seed)
                measured = train_and_measure(run.model, run.call, run.loss_from, opt,
                                             list(spec.steps))  # fmt: skip
                for r in measured:
                    role = "block" if is_block(r["module"]) else roles.get(r["module"], "fixed")
                    alias = depth_alias(r["module"], depth)
                    inner = role == "block" and not alias.endswith(".last")
                    rows.append(r | {"width": width, "depth": depth or 0, "seed": seed,
                                     "role": role, "depth_module": alias,
                                     "depth_role": "inner-block" if inner else role})  # fmt: skip
                done += 1
                if progress is not None:
                    progress(
                        f"coord-check: {done}/{total} models (width {width}"
                        + (f", depth {depth}" if depth else "")
                        + f", seed {seed}), {time.perf_counter() - t0:.1f} s"
                    )
    frame = pd.DataFrame(rows)
    fits = [fit_slopes(frame, "width", spec.param, spec.optimizer)]
    if spec.depths and len(spec.depths) > 1:
        deep = frame[~frame["depth_module"].str.contains(r"\.\d+\.|\.last\.")]  # not insides
        every = deep.groupby("depth_module")["depth"].nunique()
        deep = deep[deep["depth_module"].isin(every[every == len(spec.depths)].index)]
        fits.append(fit_slopes(deep, "depth", spec.param, spec.optimizer))
    fit = pd.concat([f for f in fits if not f.empty], ignore_index=True) if any(
        not f.empty for f in fits) else pd.DataFrame()  # fmt: skip
    zero = frame[frame["delta_rms"] == 0]["module"].unique().tolist() if len(frame) else []
    if zero:
        notes.append(f"{len(zero)} modules had not moved at some recorded step (e.g. "
                     f"{zero[0]}: a zero readout passes no gradient down at step 0, so the "
                     "layers below first move at step 2); those points are left out of "
                     "the fits")  # fmt: skip
    return {"rows": frame, "fits": fit, "verdicts": verdicts(fit, spec.optimizer), "notes": notes}
