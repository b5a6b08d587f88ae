"""``watch(model, log_to=...)``: each recorded step's statistics as TensorBoard scalars.

``log_to`` is a ``torch.utils.tensorboard.SummaryWriter`` (the user's own, left open) or a
log directory (a writer made here and closed with the watch). Tags: ``integrations.scalars``,
and with ``formats=`` ``stability/fp8/...`` (``integrations.watch_formats``).
tensorboard is imported only here, when ``log_to`` is given (the ``[tensorboard]`` extra).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stability.errors import StabilityError
from stability.integrations.scalars import LOGGED, Rows, scalars
from stability.integrations.watch_formats import FormatWatch


def _writer(log_to: Any) -> tuple[Any, bool]:
    """(a SummaryWriter, whether it is ours to close)."""
    if isinstance(log_to, str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # torch's writer needs the tensorboard package
            raise StabilityError(
                "log_to needs tensorboard: pip install 'stability[tensorboard]'"
            ) from err
        return SummaryWriter(log_dir=str(log_to)), True
    if callable(getattr(log_to, "add_scalar", None)):
        return log_to, False
    raise StabilityError(
        f"log_to must be a SummaryWriter or a log directory, got {type(log_to).__name__}"
    )


class TensorBoardSink:
    """Writes one scalar per (statistic, module) for every recorded step."""

    def __init__(
        self, log_to: Any, stats: Sequence[str] = LOGGED, formats: FormatWatch | None = None
    ) -> None:
        self.writer, self._owned = _writer(log_to)
        self.stats = tuple(stats)
        if formats is not None:  # the fp8 figures arrive as tags already
            formats.sinks.append(self.add_scalars)

    def __call__(self, step: int, rows: Rows) -> None:
        self.add_scalars(step, scalars(rows, self.stats))

    def add_scalars(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        """Flush; close the writer if it was made here."""
        self.writer.flush()
        if self._owned:
            self.writer.close()
