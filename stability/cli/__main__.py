"""``python -m stability.cli``: the same as ``stability``."""

from stability.cli import run

run()
