"""``watch(model, formats=[...], recipe=...)``: the fp8 / MX figures across training steps.

On every recorded step each watched matmul module (``core.lowp.matmul.is_matmul``)
is measured as ``stability probe --formats`` measures it, by the same ``FormatProbe``: per
format and recipe, for its input, weight, output and the gradient arriving at its output,
the amax, the scale exponents, the overflow / saturation / underflow / flush fractions and
the SQNR in dB against float64 (the output's: the module's op recomputed from the
quantised operands). One probe lives as long as the watch, so a ``delayed:H`` recipe's
amax history carries from one recorded step to the next: a signal that grows between
them overflows the delayed scale, as it would in fp8 training. The history holds the
amax of the last H *recorded* steps: with ``every=1`` that is delayed scaling exactly;
with ``every=N`` each entry is N training steps older than a real history's.

``Watch.formats_frame()``: one row per (step, module, format, recipe, tensor), the
probe's columns with the step in front. TensorBoard (``log_to``) and the trainers' loggers
get ``stability/fp8/<format>/<recipe>/<tensor>_<figure>/<module>`` for each ``FIGURES``.
Under DDP every rank records its own figures (they are not averaged).
"""

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
from torch import nn
from torch.utils.hooks import RemovableHandle

from stability.core.lowp.formats import LowpFormat, get_format
from stability.core.lowp.matmul import is_matmul
from stability.core.lowp.quantize import EVENTS
from stability.core.lowp.recipes import Recipe, get_recipe
from stability.errors import StabilityError
from stability.integrations.scalars import PREFIX
from stability.usermodel.lowp_probe import FormatProbe

FIGURES = ("amax", "scale_log2_min", "scale_log2_max", *(f"{e}_frac" for e in EVENTS), "sqnr_db")
FormatSink = Callable[[int, dict[str, float]], None]  # (step, {tag: value})


def _names(value: str | Sequence[str], what: str, example: str) -> list[str]:
    names = [value] if isinstance(value, str) else list(value)
    if not names:
        raise StabilityError(f"{what} needs at least one name, e.g. {example}")
    return names


def check_formats(
    formats: str | Sequence[str], recipe: str | Sequence[str]
) -> tuple[list[LowpFormat], list[Recipe]]:
    """The formats and recipes named, or ``get_format``'s / ``get_recipe``'s one-line error."""
    fmts = [get_format(n) for n in _names(formats, "formats", "['e4m3', 'mxfp8']")]
    return fmts, [get_recipe(n) for n in _names(recipe, "recipe", "'tensor'")]


def fp8_tag(row: dict[str, Any], figure: str) -> str:
    """``stability/fp8/<format>/<recipe>/<tensor>_<figure>/<module>``."""
    return f"{PREFIX}/fp8/{row['format']}/{row['recipe']}/{row['tensor']}_{figure}/{row['module']}"


def fp8_scalars(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """One recorded step's rows as ``{tag: value}``, every figure of ``FIGURES``."""
    return {fp8_tag(r, f): float(r[f]) for r in rows for f in FIGURES}


class FormatWatch:
    """The watch's format pass: hooks for one recorded call, rows into ``history``."""

    def __init__(
        self,
        model: nn.Module,
        named: Sequence[tuple[str, nn.Module]],
        formats: str | Sequence[str],
        recipe: str | Sequence[str] = "tensor",
    ) -> None:
        fmts, recipes = check_formats(formats, recipe)
        modules = {n: m for n, m in named if is_matmul(m)}
        if not modules:
            raise StabilityError(
                f"formats: none of the watched modules {[n for n, _ in named][:8]} does a "
                "matmul (Linear, Conv1D, Conv); watch one that does"
            )
        self.probe = FormatProbe(model, fmts, recipes, modules)
        self.history: list[dict[str, Any]] = []
        self.sinks: list[FormatSink] = []

    @classmethod
    def create(
        cls,
        model: nn.Module,
        named: Sequence[tuple[str, nn.Module]],
        formats: str | Sequence[str] | None,
        recipe: str | Sequence[str],
    ) -> "FormatWatch | None":
        """None without ``formats`` (the watch then does nothing more than before)."""
        return None if formats is None else cls(model, named, formats, recipe)

    def attach(self) -> list[RemovableHandle]:
        """Hooks for the recorded call about to run; the watch removes them after it."""
        self.probe.clear()
        return self.probe.attach()

    def harvest(self, step: int) -> None:
        """The recorded call's rows (its backward done) into the history and the sinks."""
        rows = self.probe.rows()
        self.probe.clear()
        if not rows:
            return
        self.history.extend({"step": step, **r} for r in rows)
        values = fp8_scalars(rows)
        for sink in self.sinks:
            sink(step, values)

    def frame(self) -> pd.DataFrame:
        """One row per (step, module, format, recipe, tensor), in forward order per step."""
        return pd.DataFrame(self.history)
