"""The flags that name a user's own model, shared by every subcommand that takes one.

``add_model_arguments(parser)`` adds ``--model``, ``--model-args``, ``--input``, ``--target``,
``--loss`` and ``--seed``; ``setup_from_args(args)`` builds them through
``stability.usermodel.spec.load_setup`` (one line and exit 2 on anything bad).
"""

import argparse

from stability.usermodel.spec import LOSSES, UserSetup, load_setup


def add_model_arguments(
    p: argparse.ArgumentParser, required: bool = True, seed: bool = True
) -> None:
    """Add the user-model flags to ``p`` (``--model`` required unless ``required`` is False;
    ``seed=False`` for a command that has its own ``--seed``, as doctor does)."""
    p.add_argument(
        "--model",
        required=required,
        metavar="PKG.MODULE:FACTORY",
        help="a function building your torch.nn.Module (the working directory is importable)",
    )
    p.add_argument(
        "--model-args",
        default=None,
        metavar="JSON",
        help="keyword arguments for the factory, as a JSON object (e.g. '{\"depth\": 4}')",
    )
    p.add_argument(
        "--input",
        default="",
        metavar="SPEC",
        help="the batch: a shape and dtype (32x3x28x28:float32; integers need a bound, "
        "32x16:int64:1000) or pkg.module:make_batch returning a tensor, (input, target) or "
        "a dict with 'input' and 'target'",
    )
    p.add_argument(
        "--target", default=None, metavar="SPEC", help="the target, as --input (default: one made "
        "to fit the output, for --loss)",
    )  # fmt: skip
    p.add_argument(
        "--loss",
        default=None,
        help="one of " + ",".join(sorted(LOSSES)) + " (default: a fixed random projection of "
        "the output, so every output element gets a unit-variance gradient)",
    )
    if seed:
        p.add_argument("--seed", type=int, default=0, help="seeds the factory and batches")


def setup_from_args(args: argparse.Namespace) -> UserSetup:
    """The model, batch and loss the flags name, checked by one forward pass."""
    return load_setup(
        args.model,
        args.model_args,
        args.input,
        target=args.target,
        loss=args.loss,
        seed=getattr(args, "seed", 0),
    )
