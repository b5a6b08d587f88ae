"""``python -m stability``: the same as the ``stability`` console script."""

from stability.cli import run

run()
