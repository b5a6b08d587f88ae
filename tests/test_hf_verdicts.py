"""Verdicts on real architectures (tiny Hugging Face configs built in code, no download),
checked against what an expert says of them.

- At their default initialisation all ten are healthy: "stable", except ConvNeXt, whose
  1e-6 layer scale multiplies every branch's gradient by 1e-6, so in float16 those
  gradients flush to zero (the layer scale named as the cause). With a layer scale of 1
  it is stable too.
- ``initializer_range=1.0`` (std 1 weights: a gain of fan_in per layer) explodes, where the
  architecture reads that field (T5 scales its init by fan-in and ResNet uses Kaiming:
  neither reads it, and both stay stable, rightly).
- One block's weights x1e3: flagged, and where it starts is named inside that block.
"""

import pytest
import torch

from stability.core.outputs import main_tensor
from stability.core.probe import projection_loss
from stability.usermodel.findings import judge, summary
from stability.usermodel.probe import probe_modules

pytest.importorskip("transformers")
from examples import hf_tiny


def verdict(arch: str, **over: object) -> dict:  # type: ignore[type-arg]
    model = hf_tiny.build(arch, **over).eval()
    batch = getattr(hf_tiny, f"{arch}_batch")()
    if arch not in ("t5", "whisper"):  # the decoders make their inputs from the labels
        batch.pop("labels")
    with torch.random.fork_rng():
        rows = judge(probe_modules(model, lambda: main_tensor(model(**batch)), projection_loss))
    return {"summary": summary(rows), "rows": {r["module"]: r for r in rows}}


@pytest.mark.parametrize("arch", sorted(set(hf_tiny.ARCHS) - {"convnext"}))
def test_default_init_is_stable(arch: str) -> None:
    found = verdict(arch)
    s = found["summary"]
    assert s["verdict"] == "stable", s.get("origin")
    assert s["stacks"], "the repeated blocks are found"
    # Roles: norms are judged against their gain, not against the embedding before them
    # (ResNet's BatchNorms, in eval mode, are affine maps of their running statistics).
    norms = [r for r in found["rows"].values() if r["role"] == "norm"]
    assert all(r["verdict"] == "stable" for r in norms)
    assert bool(norms) == (arch != "resnet")


def test_llama_rotary_embedding_is_parameter_free_not_exploding() -> None:
    rows = verdict("llama")["rows"]
    assert rows["model.rotary_emb"]["role"] == "parameter-free"
    assert "not judged" in rows["model.rotary_emb"]["reason"]


def test_a_frozen_positional_table_is_frozen_not_vanishing() -> None:
    model = hf_tiny.build("gpt2").eval()
    model.transformer.wpe.weight.requires_grad_(False)
    batch = hf_tiny.gpt2_batch()
    batch.pop("labels")
    rows = judge(probe_modules(model, lambda: main_tensor(model(**batch)), projection_loss))
    wpe = next(r for r in rows if r["module"] == "transformer.wpe")
    assert wpe["role"] == "frozen" and wpe["verdict"] == "stable"


def test_convnext_layer_scale_zeroes_float16_gradients() -> None:
    s = verdict("convnext")["summary"]
    assert s["verdict"] == "float16-underflow"
    assert s["origin"]["side"] == "backward"
    assert "layer_scale_parameter" in s["origin"]["reason"]
    assert "float16" in s["origin"]["reason"]
    # The witness: the same network with a layer scale of 1 keeps its gradients.
    assert verdict("convnext", layer_scale=1.0)["summary"]["verdict"] == "stable"


@pytest.mark.parametrize("arch", ["gpt2", "bert", "llama", "vit", "whisper", "convnext"])
def test_initializer_range_one_explodes(arch: str) -> None:
    s = verdict(arch, initializer_range=1.0)["summary"]
    assert s["verdict"] in ("explodes", "float16-overflow"), s
    assert s["origin"]["side"] == "forward"


@pytest.mark.parametrize("arch", ["t5", "resnet"])
def test_initializer_range_is_not_read_by_fan_in_scaled_inits(arch: str) -> None:
    assert verdict(arch, initializer_range=1.0)["summary"]["verdict"] == "stable"


@pytest.mark.parametrize(
    ("arch", "block"),
    [
        ("gpt2", "transformer.h.1"),
        ("bert", "bert.encoder.layer.1"),
        ("llama", "model.layers.1"),
        ("t5", "encoder.block.1"),
        ("vit", "vit.layers.1"),
        ("resnet", "resnet.encoder.stages.1"),
        ("convnext", "convnext.encoder.stages.1"),
    ],
)
def test_one_block_scaled_is_named(arch: str, block: str) -> None:
    s = verdict(arch, scale_block=1)["summary"]
    assert s["verdict"] in ("explodes", "float16-overflow", "non-finite"), s
    assert s["origin"]["block"] == block, s["origin"]


def test_the_cuda_script_runs_its_native_paths_on_cpu() -> None:
    """``scripts/gpu_usermodel.py`` waits for a GPU; its native bfloat16 path runs on CPU
    too, so the script is known to work before a GPU machine is lent."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "gpu_usermodel.py"
    spec = importlib.util.spec_from_file_location("gpu_usermodel", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module._rows("cpu", dtype=torch.bfloat16)
    assert module._finite(rows) and {r["verdict"] for r in rows} == {"stable"}
