"""Tiny Hugging Face models, built from a config in code (no download, no hub access).

Ten real architectures at hidden size 64 and 2 layers, as a user would probe them:

    stability probe --model examples.hf_tiny:build --model-args '{"arch": "gpt2"}' \\
        --input examples.hf_tiny:gpt2_batch

``build(arch, initializer_range=None, scale_block=None, scale=1e3, layer_scale=None)``:
``initializer_range`` overrides the config's (1.0 is a classic bad init); ``scale_block=k``
multiplies every weight of block ``k`` (the k-th member of the model's repeated layers) by
``scale``: a planted fault in one named place. ``layer_scale`` sets ConvNeXt's
``layer_scale_init_value`` (1e-6 by default, which zeroes float16 gradients).

Each ``<arch>_batch()`` returns what a DataLoader of that model yields: a dict of keyword
arguments (``input_ids``, ``attention_mask``, ``labels``; ``pixel_values``; ...).
"""

from typing import Any

import torch
from torch import nn

VOCAB = 128
BATCH = 2
TOKENS = 12
HIDDEN = 64
IMAGE = 32


def _text_config(arch: str) -> Any:
    import transformers as tf

    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=HIDDEN, n_layer=2, n_head=2,
                             bos_token_id=0, eos_token_id=0)  # fmt: skip
    if arch == "bert":
        return tf.BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=4 * HIDDEN,
                             max_position_embeddings=64)  # fmt: skip
    common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=4 * HIDDEN,
                  num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                  max_position_embeddings=64)  # fmt: skip
    if arch == "llama":
        return tf.LlamaConfig(**common)
    if arch == "qwen2":
        return tf.Qwen2Config(**common)
    if arch == "mistral":
        return tf.MistralConfig(**common, sliding_window=None)
    if arch == "t5":
        return tf.T5Config(vocab_size=VOCAB, d_model=HIDDEN, d_kv=32, d_ff=4 * HIDDEN,
                           num_layers=2, num_heads=2, decoder_start_token_id=0)  # fmt: skip
    if arch == "whisper":
        return tf.WhisperConfig(vocab_size=VOCAB, d_model=HIDDEN, encoder_layers=2,
                                decoder_layers=2, encoder_attention_heads=2,
                                decoder_attention_heads=2, encoder_ffn_dim=4 * HIDDEN,
                                decoder_ffn_dim=4 * HIDDEN, num_mel_bins=16,
                                max_source_positions=16, max_target_positions=32,
                                decoder_start_token_id=1, pad_token_id=0, bos_token_id=1,
                                eos_token_id=2,
                                suppress_tokens=[], begin_suppress_tokens=[])  # fmt: skip
    raise KeyError(arch)


def _vision_config(arch: str, layer_scale: float | None) -> Any:
    import transformers as tf

    if arch == "vit":
        return tf.ViTConfig(image_size=IMAGE, patch_size=8, hidden_size=HIDDEN,
                            num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=4 * HIDDEN, num_labels=10)  # fmt: skip
    if arch == "resnet":
        return tf.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                               layer_type="basic", num_labels=10)  # fmt: skip
    if arch == "convnext":
        extra = {} if layer_scale is None else {"layer_scale_init_value": layer_scale}
        return tf.ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2,
                                 num_labels=10, patch_size=4, **extra)  # fmt: skip
    raise KeyError(arch)


# arch -> (model class name in transformers, text or vision)
ARCHS = {
    "gpt2": "GPT2LMHeadModel",
    "bert": "BertForMaskedLM",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mistral": "MistralForCausalLM",
    "t5": "T5ForConditionalGeneration",
    "whisper": "WhisperForConditionalGeneration",
    "vit": "ViTForImageClassification",
    "resnet": "ResNetForImageClassification",
    "convnext": "ConvNextForImageClassification",
}
VISION = ("vit", "resnet", "convnext")


def build(
    arch: str = "gpt2",
    initializer_range: float | None = None,
    scale_block: int | None = None,
    scale: float = 1e3,
    layer_scale: float | None = None,
    seed: int = 0,
) -> nn.Module:
    """The tiny ``arch`` model (see ``ARCHS``), seeded, optionally with a planted fault."""
    import transformers as tf

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    config = _vision_config(arch, layer_scale) if arch in VISION else _text_config(arch)
    if initializer_range is not None:
        config.initializer_range = initializer_range  # T5 and ResNet do not use it
    config.attn_implementation = "eager"
    torch.manual_seed(seed)
    model: nn.Module = getattr(tf, ARCHS[arch])(config)
    if scale_block is not None:
        block = blocks_of(model)[scale_block]
        with torch.no_grad():
            for p in block.parameters():
                if p.dim() >= 2:  # weights, not norms' gains or biases
                    p.mul_(scale)
    return model


def blocks_of(model: nn.Module) -> list[nn.Module]:
    """The model's repeated layers in order (the encoder's first for encoder-decoders)."""
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList | nn.Sequential) and len(module) >= 2:
            kinds = {type(m) for m in module}
            if len(kinds) == 1 and any(True for _ in module[0].parameters()):
                return list(module)
    raise ValueError(f"{type(model).__name__} has no repeated layers")


def _tokens(seed: int, n: int = TOKENS, high: int = VOCAB) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (BATCH, n), generator=gen)


def _lm_batch() -> dict[str, torch.Tensor]:
    ids = _tokens(0)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def gpt2_batch() -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and labels (= the ids: the model shifts them itself)."""
    return _lm_batch()


llama_batch = qwen2_batch = mistral_batch = bert_batch = gpt2_batch


def t5_batch() -> dict[str, torch.Tensor]:
    """Encoder ids and mask, and labels (the model makes its decoder inputs from them)."""
    ids = _tokens(0)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": _tokens(1, 6)}


def whisper_batch() -> dict[str, torch.Tensor]:
    """Log-mel features (16 bins x 32 frames) and decoder labels."""
    gen = torch.Generator().manual_seed(0)
    return {"input_features": torch.randn(BATCH, 16, 32, generator=gen), "labels": _tokens(1, 6)}


def _image_batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(BATCH, 3, IMAGE, IMAGE, generator=gen)
    return {"pixel_values": pixels, "labels": torch.randint(0, 10, (BATCH,), generator=gen)}


vit_batch = resnet_batch = convnext_batch = _image_batch
