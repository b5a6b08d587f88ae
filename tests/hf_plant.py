"""A test helper factory: a tiny Hugging Face model (``examples.hf_tiny``) with one weight
multiplied by a factor, the smallest planted change a gate must trace to its module.

The factor is not a flag (the gate refuses a baseline recorded for other flags): it is
``FACTOR``, which a test sets between baseline and gate, or ``$HF_PLANT_FACTOR``."""

import os

import torch
from torch import nn

from examples.hf_tiny import build as build_tiny

# arch -> a module in the middle of the network whose weight the tests scale
PLANTED = {
    "gpt2": "transformer.h.1.mlp.c_fc",
    "llama": "model.layers.1.mlp.gate_proj",
    "bert": "bert.encoder.layer.1.intermediate.dense",
    "t5": "encoder.block.1.layer.1.DenseReluDense.wi",
    "vit": "vit.layers.1.mlp.fc1",
    "resnet": "resnet.encoder.stages.1.layers.0.layer.0.convolution",
}


FACTOR = 1.0


def build(arch: str = "gpt2", dropout: float | None = None) -> nn.Module:
    """``examples.hf_tiny.build(arch)`` with ``PLANTED[arch]``'s weight times the factor;
    ``dropout`` sets every ``nn.Dropout``'s probability (a model whose train mode differs)."""
    factor = float(os.environ.get("HF_PLANT_FACTOR", FACTOR))
    model = build_tiny(arch)
    if factor != 1.0:
        with torch.no_grad():
            model.get_submodule(PLANTED[arch]).weight.mul_(factor)
    if dropout is not None:
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = dropout
    return model
