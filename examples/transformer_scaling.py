"""A pre-norm transformer whose ``width`` and ``depth`` scale, for ``stability coord-check``.

    stability coord-check --model examples.transformer_scaling:build \\
        --input examples.transformer_scaling:make_batch --loss cross_entropy --param mup

Unlike ``examples.transformer`` the head size is fixed (16) and the number of heads grows
with the width, so the usual 1/sqrt(head size) attention scale is already what muP asks
(muP's 1/d rule is for a head size that grows). ``residual_branches`` names each residual
branch's last module, which Depth-muP and CompleteP multiply by 1/sqrt(L) or 1/L.
"""

import math

import torch
from torch import nn

VOCAB = 64
HEAD = 16


class Attention(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.heads = max(width // HEAD, 1)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, w // self.heads).unbind(dim=2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # batch x heads x tokens x head
        scores = q @ k.transpose(-2, -1) / math.sqrt(w // self.heads)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        weights = scores.masked_fill(mask, float("-inf")).softmax(dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, t, w))


class MLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(torch.nn.functional.gelu(self.fc1(x)))
        return out


class Block(nn.Module):
    """Pre-norm: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = Attention(width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    residual_branches = ("layers.*.attn.out", "layers.*.mlp.fc2")

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.layers = nn.ModuleList(Block(width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.layers:
            x = block(x)
        out: torch.Tensor = self.head(self.norm(x))
        return out


def build(width: int = 64, depth: int = 2) -> Transformer:
    """The factory ``--model examples.transformer_scaling:build`` calls."""
    return Transformer(width, depth)


def make_batch(batch: int = 2, tokens: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and next-token targets (the same ids shifted), from a fixed seed."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (batch, tokens + 1), generator=gen)
    return ids[:, :-1], ids[:, 1:]
