"""Hypothesis strategies and assertions for checking the numerics of your own models.

Strategies draw the project's names and configs, so a property over "any activation, any
init" is one decorator away::

    @given(stability.testing.mlp_configs(max_depth=6, max_width=32))
    def test_my_training_step(config): ...

Assertions run one forward and backward pass (a fixed random projection of the output is the
loss, so the gradient entering the top has variance 1) and fail with a message that names
the first broken layer, the phase (forward or backward) and how far off it is::

    assert_variance_preserved(model, x, band=(-1, 1))  # within 10x of layer 1, both ways
    assert_gradients_finite(model, x)
    assert_no_overflow(model, x, dtype="float16")

``x`` is what the model is called with: a tensor (``model(x)``), a dict of keyword
arguments (``model(**batch)``, as a Hugging Face model takes its batch) or a tuple of
positional arguments (``model(*x)``). The output may be a tensor, tuple, dict, dataclass or
``ModelOutput``; the loss is the projection of its main tensor (``logits`` first).

A "layer" is a watched module, numbered from 1 at the input, named by qualified name. By
default ``assert_gradients_finite`` and ``assert_no_overflow`` watch every module holding
parameters of its own (Linear, transformers' Conv1D, embeddings, norms, convolutions) in
forward order; ``assert_variance_preserved`` compares the model's repeated blocks (GPT-2's
``transformer.h.*``, Llama's ``model.layers.*``: the residual stream, block by block) and a
model without repeated blocks module by module. The project's ``MLP`` is read by its
blocks. Pass ``modules=`` to watch others (``stability.testing.layers`` has the details).
The pass clears the model's ``.grad`` first and leaves the gradients of its own pass there;
it does not change train/eval mode: call ``model.eval()`` first if dropout would make the
check random.

Strategies need hypothesis (``pip install 'stability[test]'``); the assertions do not.
"""

from collections.abc import Sequence

from torch import nn

from stability.testing.checks import (
    DEFAULT_BAND,
    check_band,
    finite_message,
    overflow_dtype,
    overflow_message,
    variance_message,
)
from stability.testing.layers import VALUES, VARIANCE, Inputs, measure
from stability.testing.strategies import MAX_SEED, activations, dtypes, inits, mlp_configs

__all__ = [
    "DEFAULT_BAND",
    "MAX_SEED",
    "Inputs",
    "activations",
    "assert_gradients_finite",
    "assert_no_overflow",
    "assert_variance_preserved",
    "dtypes",
    "inits",
    "mlp_configs",
]


def _fail(message: str | None) -> None:
    if message is not None:
        raise AssertionError(message)


def assert_variance_preserved(
    model: nn.Module,
    x: Inputs,
    band: tuple[float, float] = DEFAULT_BAND,
    modules: Sequence[nn.Module] | None = None,
) -> None:
    """Every layer's forward and backward variance stays within ``band`` of layer 1's.

    ``band = (lo, hi)`` is in log10 units: ``(-1, 1)`` allows each layer's output variance
    (and the variance of the gradient at its output) to be 10x smaller to 10x larger than
    layer 1's. Variance compounds multiplicatively with depth, so a log scale is the fair
    one. Raises AssertionError naming the first layer outside the band and its log10 ratio.
    Finite width fluctuates: a width-256 layer's variance can sit 10-30 % off, so keep the
    band wider than that noise times sqrt(depth). By default the layers are the model's
    repeated blocks if it has them (a transformer's layers), else its parameter modules.
    """
    check_band(band)
    _fail(variance_message(measure(model, x, modules, purpose=VARIANCE), band))


def assert_gradients_finite(
    model: nn.Module, x: Inputs, modules: Sequence[nn.Module] | None = None
) -> None:
    """One forward/backward pass leaves every output, gradient and parameter grad finite.

    A non-finite forward value is reported at the first layer where it appears (the
    gradients below cannot be finite then), then at the model's output if only that is
    non-finite. Otherwise the backward pass is blamed where it starts: it runs from the top
    layer down, so the highest layer with a non-finite gradient (at its output or in its
    parameters) is where it broke; the layers under it inherit it.
    """
    _fail(finite_message(measure(model, x, modules, purpose=VALUES), model))


def assert_no_overflow(
    model: nn.Module,
    x: Inputs,
    dtype: str = "float16",
    modules: Sequence[nn.Module] | None = None,
) -> None:
    """No layer output or output gradient would overflow if stored in ``dtype``.

    Works on a float32 model (it counts the values beyond ``dtype``'s largest finite value,
    that a float16/bfloat16 run would turn into inf) and on emulated or native
    reduced-precision models. An inf or NaN already there fails too: ``dtype`` cannot hold
    it either. The first overflowing layer in the forward pass is reported; if only
    gradients overflow, the highest such layer (where the backward pass first overflows).
    """
    overflow_dtype(dtype)
    layers = measure(model, x, modules, precision=dtype, purpose=VALUES)
    _fail(overflow_message(layers, dtype))
