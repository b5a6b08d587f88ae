"""``stability.testing`` and the plugin's ``stability_check`` on real Hugging Face models.

Tiny configs built in code (``examples/hf_tiny.py``: hidden 64, 2 layers, eval mode, seed 0)
called as a user calls them, ``model(**batch)``, returning ``ModelOutput``s. Each assertion
passes on the default init and fails on a planted fault, naming the planted module and the
phase. The variance check reads the repeated blocks: layer 1 is the stream entering the
first block, layers 2 and 3 the blocks' outputs.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

from examples import hf_tiny
from stability.errors import StabilityError
from stability.testing import (
    assert_gradients_finite,
    assert_no_overflow,
    assert_variance_preserved,
)

pytest_plugins = ["pytester"]


def tiny(arch: str, **kwargs: Any) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    model = hf_tiny.build(arch, **kwargs).eval()
    batch: dict[str, torch.Tensor] = getattr(hf_tiny, f"{arch}_batch")()
    return model, batch


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert", "t5", "vit", "resnet"])
def test_default_init_passes_finite_and_overflow_checks(arch: str) -> None:
    model, batch = tiny(arch)
    assert_gradients_finite(model, batch)
    assert_no_overflow(model, batch, dtype="float16")


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert", "vit"])
def test_default_init_preserves_variance_across_blocks(arch: str) -> None:
    """Measured at seeds 0-2: every block within 10^0.45 of the stream entering block 0."""
    model, batch = tiny(arch)
    assert_variance_preserved(model, batch)


BLOCK_NAMES = {"gpt2": "transformer.h", "llama": "model.layers", "vit": "vit.layers"}


def variance_error(model: nn.Module, batch: dict[str, torch.Tensor]) -> str:
    with pytest.raises(AssertionError) as caught:
        assert_variance_preserved(model, batch)
    return str(caught.value)


@pytest.mark.parametrize("arch", sorted(BLOCK_NAMES))
def test_witness_scaled_block_is_named(arch: str) -> None:
    """Block 1's weights x 1e3 blow the residual stream up there (10^+10 and more)."""
    message = variance_error(*tiny(arch, scale_block=1))
    assert f"at layer 3 of 3 ({BLOCK_NAMES[arch]}.1: " in message, message
    assert "forward variance is 10^+" in message, message


@pytest.mark.parametrize("arch", sorted(BLOCK_NAMES))
def test_witness_unit_init_is_named_at_the_first_block(arch: str) -> None:
    """``initializer_range=1.0``: the first block multiplies the stream's variance (10^+1.8
    for ViT up to 10^+5.7 for Llama): caught against the stream entering it."""
    message = variance_error(*tiny(arch, initializer_range=1.0))
    assert f"at layer 2 of 3 ({BLOCK_NAMES[arch]}.0: " in message, message


def test_witness_bert_post_norm_gain_is_named() -> None:
    """BERT normalises after each block, so scaled weights stay inside a block (its output is
    a LayerNorm's, variance 1: the overflow check catches those); a block's output gain
    x 100 is what reaches the stream: 10^+4 at that block."""
    model, batch = tiny("bert")
    with torch.no_grad():
        model.bert.encoder.layer[1].output.LayerNorm.weight.mul_(100)  # type: ignore[union-attr,index,operator]
    message = variance_error(model, batch)
    assert "at layer 3 of 3 (bert.encoder.layer.1: BertLayer)" in message, message
    assert "forward variance is 10^+4.00" in message, message


# -- planted faults in GPT-2's first MLP -----------------------------------------------------

FC = "transformer.h.0.mlp.c_fc"


def planted(edit: Callable[[torch.Tensor], torch.Tensor]) -> tuple[nn.Module, dict[str, Any]]:
    """GPT-2 with ``edit`` applied to the output of its first MLP's ``c_fc`` (a Conv1D)."""
    model, batch = tiny("gpt2")
    fc = dict(model.named_modules())[FC]
    fc.register_forward_hook(lambda m, a, out: edit(out))
    return model, batch


def overflow_to_nan(out: torch.Tensor) -> torch.Tensor:
    """x 1e6, then products past float32's range of both signs subtracted: all NaN."""
    big = out * 1e6 * 1e35
    return big - big


class _BrokenBackward(torch.autograd.Function):
    """Identity forward; the gradient divided by zero backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad / torch.zeros_like(grad)


def broken_backward(out: torch.Tensor) -> torch.Tensor:
    result: torch.Tensor = _BrokenBackward.apply(out)  # type: ignore[no-untyped-call]
    return result


def failure(check: Callable[..., None], model: nn.Module, batch: Any, **kw: Any) -> str:
    with pytest.raises(AssertionError) as caught:
        check(model, batch, **kw)
    message = str(caught.value)
    assert "\n" not in message and "infx" not in message, message
    return message


def test_witness_forward_nan_fails_both_checks_naming_the_module() -> None:
    model, batch = planted(overflow_to_nan)
    where = rf"at layer \d+ of \d+ \({re.escape(FC)}: Conv1D\)"
    message = failure(assert_gradients_finite, model, batch)
    assert re.search("non-finite forward values " + where, message), message
    assert "holds NaN (forward pass)" in message, message
    # Before issue 23 this passed: an all-NaN output has no value above 65504.
    message = failure(assert_no_overflow, model, batch, dtype="float16")
    assert re.search("float16 overflow in the forward pass " + where, message), message
    assert "holds NaN values before any rounding" in message, message


def test_witness_float16_overflow_names_the_module_and_the_factor() -> None:
    model, batch = planted(lambda out: out * 1e6)
    assert_gradients_finite(model, batch)  # float32 holds it
    message = failure(assert_no_overflow, model, batch, dtype="float16")
    assert f"forward pass at layer 7 of 16 ({FC}: Conv1D)" in message, message  # wte wpe ln_1 ..
    assert re.search(r"of its outputs exceed 65504 \(largest \|value\| [\d.e+]+, [\d.]+x", message)
    assert_no_overflow(model, batch, dtype="bfloat16")  # bfloat16's range is float32's


def test_witness_backward_nan_names_the_module_and_phase() -> None:
    model, batch = planted(broken_backward)
    message = failure(assert_gradients_finite, model, batch)
    assert f"non-finite gradient at layer 7 of 16 ({FC}: Conv1D) (backward pass)" in message
    message = failure(assert_no_overflow, model, batch, dtype="float16")
    assert f"float16 overflow in the backward pass at layer 7 of 16 ({FC}: Conv1D)" in message


# -- inputs and outputs ----------------------------------------------------------------------


@dataclass
class Prediction:
    hidden: torch.Tensor
    scores: torch.Tensor


class TwoInputs(nn.Module):
    """Positional arguments in, a plain dataclass out."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor, scale: float) -> Prediction:
        h = self.a(x) * scale
        return Prediction(h, self.b(h))


def test_tuple_input_and_dataclass_output() -> None:
    model, x = TwoInputs(), torch.randn(16, 8)
    assert_gradients_finite(model, (x, 1.0))
    message = failure(assert_no_overflow, model, (x, 1e6))
    assert "forward pass at layer 2 of 2 (b: Linear)" in message, message  # a(x) * 1e6 feeds b


def test_tensor_input_still_works_on_a_transformer() -> None:
    model, batch = tiny("gpt2")
    assert_gradients_finite(model, batch["input_ids"])  # model(input_ids): logits, no loss


def test_output_without_floating_tensors_is_one_line() -> None:
    class Ids(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x).argmax(-1)

    with pytest.raises(StabilityError, match="returned no floating-point tensor") as caught:
        assert_gradients_finite(Ids(), torch.randn(2, 4))
    assert "\n" not in str(caught.value)


# -- the plugin -------------------------------------------------------------------------------

USER_TESTS = """
from examples import hf_tiny

def test_gpt2(stability_check):
    model = hf_tiny.build("gpt2").eval()
    stability_check.variance_preserved(model, hf_tiny.gpt2_batch())
    stability_check.gradients_finite(model, hf_tiny.gpt2_batch())

def test_t5(stability_check):
    stability_check.no_overflow(hf_tiny.build("t5").eval(), hf_tiny.t5_batch())

def test_scaled_llama(stability_check):
    model = hf_tiny.build("llama", scale_block=1).eval()
    stability_check.variance_preserved(model, hf_tiny.llama_batch())
"""


def test_plugin_checks_and_records_hf_models(pytester: pytest.Pytester) -> None:
    import json

    from test_pytest_plugin import FLAGS

    pytester.makepyfile(test_user=USER_TESTS)
    out = pytester.path / "report"
    result = pytester.runpytest(*FLAGS, "--stability-report", str(out), "-q")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*variance not preserved at layer 3 of 3 (model.layers.1:*"])
    rows = json.loads((out / "stability_probed.json").read_text())["rows"]
    variance = [r["module"] for r in rows if r["check"] == "variance_preserved"]
    assert variance[:3] == ["transformer.h.0 (input)", "transformer.h.0", "transformer.h.1"]
    t5 = [r["module"] for r in rows if r["test"].endswith("test_t5")]
    assert "encoder.block.0.layer.0.SelfAttention.q" in t5 and "lm_head" in t5
    assert all(r["outcome"] == "failed" for r in rows if r["test"].endswith("llama"))
