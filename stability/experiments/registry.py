"""The experiments by name, in the notes' order, and the one lookup the CLI uses."""

from collections.abc import Sequence

from stability.core.registry import lookup
from stability.experiments import depth, dropout, figures, float16, polynomial, weight_decay
from stability.experiments.common import Experiment
from stability.experiments.names import NAMES

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            polynomial.NAME,
            "Under- and overfitting: polynomial regression",
            polynomial.run,
            polynomial.claims,
            figures.draw_polynomial,
            10,
            10,
            "Too few features cannot fit even the training data (underfitting); too many fit "
            "the training data as well but generalise worse; the right degree reaches the "
            "noise floor on both.",
        ),
        Experiment(
            weight_decay.NAME,
            "Weight decay",
            weight_decay.run,
            weight_decay.claims,
            figures.draw_weight_decay,
            10,
            10,
            "Without decay, 200 weights fit 20 points exactly and the test loss stays huge; "
            "λ = 3 shrinks ||w|| tenfold and the test loss by orders of magnitude. The notes' "
            "closed-form step and torch's SGD(weight_decay) agree to rounding.",
        ),
        Experiment(
            dropout.NAME,
            "Dropout",
            dropout.run,
            dropout.claims,
            figures.draw_dropout,
            5,
            10,
            "Without dropout the MLP memorises the flipped labels (train accuracy 1); p = 0.5 "
            "narrows the train - test gap. Eval mode is the identity, the inverted mask is "
            "unbiased, and a fixed seed and initial weights reproduce a run bit for bit.",
        ),
        Experiment(
            depth.NAME,
            "Trainability with depth",
            depth.run,
            depth.claims,
            figures.draw_depth,
            3,
            10,
            "Where the probe's verdict is 'vanishes' the network learns nothing in the budget; "
            "where it is 'stable' it trains: the variance diagnosis predicts trainability.",
        ),
        Experiment(
            float16.NAME,
            "float16 training",
            float16.run,
            float16.claims,
            figures.draw_float16,
            3,
            10,
            "In float16 the bottom layers' weight gradients are zero (underflow) while float32 "
            "keeps them; loss scaling brings them back. The loss curves barely differ: the top "
            "layers do the learning, so only the zero fractions show what float16 lost.",
        ),
    )
}

assert tuple(EXPERIMENTS) == NAMES, "names.NAMES lists the experiments for the CLI's help"


def select(names: Sequence[str] | None) -> list[Experiment]:
    """The named experiments in the notes' order (all when ``names`` is None)."""
    if names is None:
        return list(EXPERIMENTS.values())
    chosen = {lookup("experiment", n, EXPERIMENTS).name for n in names}
    return [e for e in EXPERIMENTS.values() if e.name in chosen]
