"""Factories for Hugging Face ``transformers`` models, so ``--model`` needs no file of yours.

    stability probe --model stability.integrations.hf_models:pretrained \\
        --model-args '{"path": "./my-checkpoint"}' --input 4x128:int64
    stability probe --model stability.integrations.hf_models:from_config \\
        --model-args '{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "intermediate_size": 256}' --input 4x32:int64

``pretrained`` loads a checkpoint directory from local disk only (``local_files_only``:
never the hub); ``from_config`` builds a fresh model of ``model_type`` from config fields
(``transformers.AutoConfig.for_model``), at the architecture's own initialisation. ``auto``
names the head: ``AutoModelForCausalLM`` (default), ``AutoModel``,
``AutoModelForSeq2SeqLM``, ``AutoModelForMaskedLM``, ``AutoModelForImageClassification``,
... Attention runs in eager mode, so every operator is a module or a plain op the probe sees.
"""

from pathlib import Path
from typing import Any

from torch import nn

from stability.errors import StabilityError

AUTO_DEFAULT = "AutoModelForCausalLM"


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise StabilityError(
            "stability.integrations.hf_models needs transformers: pip install transformers "
            "(or the project's extra: pip install 'stability[hf]')"
        ) from None
    return transformers


def _auto(tf: Any, auto: str) -> Any:
    cls = getattr(tf, auto, None) if auto.startswith("AutoModel") else None
    if cls is None:
        valid = sorted(n for n in dir(tf) if n.startswith("AutoModel"))[:12]
        raise StabilityError(f"unknown auto class {auto!r}; valid choices include {valid}")
    return cls


def pretrained(path: str, auto: str = AUTO_DEFAULT, **kwargs: Any) -> nn.Module:
    """``auto.from_pretrained(path, local_files_only=True, **kwargs)``, eager attention."""
    if not (Path(path) / "config.json").is_file():
        raise StabilityError(
            f"checkpoint {path!r} is not a directory with a config.json (a local "
            "save_pretrained directory; the hub is never asked)"
        )
    tf = _transformers()
    cls = _auto(tf, auto)
    try:
        model: nn.Module = cls.from_pretrained(
            path, local_files_only=True, attn_implementation="eager", **kwargs
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StabilityError(f"cannot load {path!r} with {auto}: {first}") from None
    return model


def from_config(model_type: str, auto: str = AUTO_DEFAULT, **config: Any) -> nn.Module:
    """A freshly initialised ``model_type`` model with these config fields."""
    tf = _transformers()
    cls = _auto(tf, auto)
    known = sorted(tf.CONFIG_MAPPING.keys())
    if model_type not in known:
        near = [k for k in known if k.startswith(model_type[:3])][:10] or known[:10]
        raise StabilityError(
            f"unknown model_type {model_type!r}; valid choices include {near} "
            f"({len(known)} in all: transformers.CONFIG_MAPPING)"
        )
    try:
        cfg = tf.AutoConfig.for_model(model_type, **config)
    except (TypeError, ValueError) as exc:
        raise StabilityError(f"model_type {model_type!r}: {str(exc).splitlines()[0]}") from None
    cfg._attn_implementation = "eager"
    try:
        model: nn.Module = cls.from_config(cfg)
    except ValueError as exc:
        raise StabilityError(
            f"{auto} cannot build a {model_type!r} model: {str(exc).splitlines()[0]}"
        ) from None
    return model
