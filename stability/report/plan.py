"""What the report runs: the sweep grids behind its sections.

The default grid feeds the atlas, the heat map and the history; a small float16/bfloat16
grid on a few telling configurations feeds the precision section. Both resume from the
store, so the plan says *what*, the runner decides what is still missing.
"""

from dataclasses import dataclass

from stability.sweep.run import Cell, SweepGrid

# The precision section compares float16 with bfloat16 on a few telling configurations:
# the library default (stable), the notes' N(0,1) weights (overflow), Xavier with tanh and
# with sigmoid (the sigmoid gradient vanishes into subnormals), nn.Linear's own default
# (signals shrink towards flush-to-zero). float16 cells are shared with the default sweep.
PRECISION_CONFIGS: tuple[tuple[str, str], ...] = (
    ("relu", "kaiming_normal"),
    ("relu", "standard_normal"),
    ("tanh", "xavier_normal"),
    ("sigmoid", "xavier_normal"),
    ("identity", "torch_default"),
)
PRECISION_DTYPES = ("float16", "bfloat16")


@dataclass(frozen=True)
class PairGrid(SweepGrid):
    """A sweep grid restricted to chosen (activation, init) pairs: one run, few cells."""

    pairs: tuple[tuple[str, str], ...] = ()

    def cells(self) -> list[Cell]:
        wanted = set(self.pairs)
        return [c for c in super().cells() if (c.config.activation, c.config.init) in wanted]


def default_grid(quick: bool) -> SweepGrid:
    """The sweep the report draws: the CLI's default grid; ``quick`` keeps seed 0 only."""
    return SweepGrid(seeds=(0,)) if quick else SweepGrid()


def precision_grid(quick: bool) -> PairGrid:
    """The float16/bfloat16 cells of ``PRECISION_CONFIGS``: three seeds, one when quick."""
    acts = tuple(dict.fromkeys(a for a, _ in PRECISION_CONFIGS))
    inits = tuple(dict.fromkeys(i for _, i in PRECISION_CONFIGS))
    return PairGrid(
        activations=acts,
        inits=inits,
        dtypes=PRECISION_DTYPES,
        seeds=(0,) if quick else (0, 1, 2),
        pairs=PRECISION_CONFIGS,
    )


def sweeps(quick: bool) -> list[tuple[str, SweepGrid]]:
    """The sweeps a report run fills, named as its steps are, in order."""
    return [("default sweep", default_grid(quick)), ("precision grid", precision_grid(quick))]
