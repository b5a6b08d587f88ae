"""The flags that name a user's own model, shared by every subcommand that takes one.

``add_model_arguments(parser)`` adds ``--model``, ``--model-args``, ``--input``, ``--target``,
``--loss``, ``--mode`` and ``--seed``; ``setup_from_args(args)`` builds them through
``stability.usermodel.spec.load_setup`` (one line and exit 2 on anything bad).
"""

import argparse

from stability.usermodel.spec import CHOICES, MODES, UserSetup, load_setup

DEFAULT_MODE = "eval"


def add_model_arguments(
    p: argparse.ArgumentParser, required: bool = True, seed: bool = True, training: bool = False
) -> None:
    """Add the user-model flags to ``p`` (``--model`` required unless ``required`` is False;
    ``seed=False`` for a command that has its own ``--seed``, as doctor does; ``training``
    for the doctor, whose default objective is bounded)."""
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
        help="the batch: a shape and dtype (32x3x28x28:float32; integers take a bound, "
        "32x16:int64:1000, else the model's config.vocab_size); named keyword arguments "
        "(input_ids=2x12:int64,attention_mask=2x12:int64:2); or pkg.module:make_batch (or a "
        "DataLoader: its first batch) returning a tensor, a dict of keyword arguments, a "
        "tuple of positional arguments, (args, kwargs), or (input, target): two tensors",
    )
    p.add_argument(
        "--target", default=None, metavar="SPEC", help="the target, as --input (default: the "
        "batch's labels, else one made to fit the output, for --loss)",
    )  # fmt: skip
    default = (
        "the model's own loss when the batch has labels, else cross_entropy for logits, "
        "else mse against a made target"
        if training
        else "a fixed random projection of the output, so every output element gets a "
        "unit-variance gradient"
    )
    p.add_argument(
        "--loss",
        default=None,
        help="one of " + ",".join(CHOICES) + " (model: the model's own loss, as Hugging Face "
        f"models compute it from labels; default: {default})",
    )
    p.add_argument(
        "--mode",
        default=None,
        choices=sorted(MODES),
        help="the model's mode: eval (dropout off, deterministic) or train (default: eval"
        + (", for training too, so runs repeat exactly" if training else "")
        + ")",
    )
    if seed:
        p.add_argument("--seed", type=int, default=0, help="seeds the factory and batches")


def mode_of(args: argparse.Namespace) -> str:
    """The mode asked for, ``eval`` unless ``--mode`` was given."""
    mode: str | None = getattr(args, "mode", None)
    return mode or DEFAULT_MODE


def json_asked(args: argparse.Namespace) -> bool:
    """``--json`` (gate spells it ``--format json``): the user's prints go to stderr."""
    return bool(getattr(args, "json", False)) or getattr(args, "format", None) == "json"


def setup_from_args(
    args: argparse.Namespace, mode: str | None = None, bounded: bool = False
) -> UserSetup:
    """The model, batch and loss the flags name, checked by one forward pass."""
    return load_setup(
        args.model,
        args.model_args,
        args.input,
        target=args.target,
        loss=args.loss,
        seed=getattr(args, "seed", 0),
        mode=mode or mode_of(args),
        bounded=bounded,
        quiet=json_asked(args),
    )


def mode_line(mode: str) -> str:
    """``mode: eval (dropout off, ...)``, as every command prints it."""
    legacy = "as the factory left the model (a baseline from before --mode)"
    return f"mode: {MODES.get(mode, legacy)}"
