"""The sweep's MLP under low-precision formats, layer by layer: ``probe_formats`` on it.

A low-precision sweep cell is the MLP of an ordinary cell built in float32 (the carrier:
the network runs unquantised in float32; each Linear's input, weight, output and gradient
are stored in the format and read back beside it, as ``stability probe --formats`` does for
a user's model), the probe input ``x ~ N(0, 1)`` and the fixed random projection loss of
``core.probe``. Its rows are ``probe_formats``'s, one per (layer, format, recipe, tensor),
with ``layer`` the Linear's place (1 = the first). Which layer first loses what is
``first_events``: the sweep prints it, the property suite holds it to the mean field.
"""

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from stability.core.config import MLPConfig
from stability.core.lowp.formats import LowpFormat
from stability.core.lowp.recipes import Recipe
from stability.core.lowp.training_events import loss_down
from stability.core.model import build_mlp, input_batch
from stability.core.probe import projection_loss
from stability.usermodel.lowp_probe import probe_formats

CARRIER = "float32"  # the dtype the MLP itself runs in; the formats are emulated beside it


def carrier_config(config: MLPConfig) -> MLPConfig:
    """The same network in the carrier dtype (the cell's seed, shape, init and device)."""
    return replace(config, dtype=CARRIER)


def lowp_cell_key(config: MLPConfig, batch: int, fmt: LowpFormat, recipe: str) -> str:
    """A low-precision cell's identity for ``--resume``: the carrier cell's fields, with
    ``dtype`` the format's name and the recipe (``block32`` for MX) beside it."""
    fields = {**carrier_config(config).as_dict(), "dtype": fmt.name}
    return json.dumps({**fields, "batch": batch, "carrier": CARRIER, "recipe": recipe},
                      sort_keys=True)  # fmt: skip


def mlp_format_rows(
    config: MLPConfig, batch: int, formats: Sequence[LowpFormat], recipes: Sequence[Recipe]
) -> list[dict[str, Any]]:
    """One probe pass of the cell's MLP (in the carrier dtype) with every format measured:
    ``probe_formats``'s rows, each with its ``layer``. The formats do not change the pass
    (nothing quantised is fed on), so one pass for several gives each the rows it alone
    would."""
    model = build_mlp(carrier_config(config))
    x = input_batch(carrier_config(config), batch)
    rows = probe_formats(model, lambda: model(x), projection_loss, formats, recipes)
    return [{"layer": r["order"], **r} for r in rows]


@dataclass(frozen=True)
class FirstEvent:
    """The first layer (``order``: forward order, 1 = the first Linear) where one thing
    happens, and in which of its tensors."""

    layer: int
    tensor: str
    value: float  # the fraction (overflow, flush) or the SQNR in dB (below target)

    def describe(self, what: str, tensor: bool = True) -> str:
        shown = f"{self.value:.1f} dB" if what == "sqnr" else f"{self.value:.2%}"
        where = f" {self.tensor}" if tensor else ""
        return f"layer {self.layer}{where} ({shown})"


def _first(
    rows: list[dict[str, Any]], hit: str, target: float, backward: bool = False
) -> FirstEvent | None:
    """The first row (by layer; from the top with ``backward``) with ``hit``."""
    ordered = sorted(rows, key=loss_down if backward else lambda r: r["order"])  # stable
    for r in ordered:
        if hit == "sqnr":
            if r["tensor"] in ("output", "grad") and r["sqnr_db"] < target:
                return FirstEvent(r["order"], r["tensor"], r["sqnr_db"])
        elif r[f"{hit}_frac"] > 0:
            return FirstEvent(r["order"], r["tensor"], r[f"{hit}_frac"])
    return None


def first_events(rows: list[dict[str, Any]], target: float) -> list[dict[str, Any]]:
    """Per (format, recipe) in the rows: the first layer whose input, weight or output
    overflows and flushes (a nonzero value stored as zero), in forward order; the first
    whose gradient does, in backward order (the gradient's own: from the loss down); and
    the first whose output or gradient SQNR is below ``target`` (a NaN SQNR, no signal, is
    never below). None where no layer has one."""
    cases: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        cases.setdefault((r["format"], r["recipe"]), []).append(r)
    out = []
    for (fmt, recipe), rs in cases.items():
        fwd = [r for r in rs if r["tensor"] != "grad"]
        grad = [r for r in rs if r["tensor"] == "grad"]
        sqnrs = [r["sqnr_db"] for r in rs if r["tensor"] == "output"]
        out.append({
            "format": fmt, "recipe": recipe,
            "overflow": _first(fwd, "overflow", target),
            "grad_overflow": _first(grad, "overflow", target, backward=True),
            "flush": _first(fwd, "flush", target),
            "grad_flush": _first(grad, "flush", target, backward=True),
            "below_target": _first(rs, "sqnr", target),
            "min_sqnr_db": min((v for v in sqnrs if not math.isnan(v)), default=math.nan),
        })  # fmt: skip
    return out
