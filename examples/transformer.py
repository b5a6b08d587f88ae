"""A small pre-norm transformer (token embedding, attention, LayerNorm, residuals), to probe.

    stability probe --model examples.transformer:build --input examples.transformer:make_batch \\
        --loss cross_entropy

Two findings a plain MLP cannot show: each block adds its branch's variance to the residual
stream, so the stream's variance grows linearly with depth, while every LayerNorm resets
the scale to 1 before the branch reads it. ``softmax="naive"`` (``exp(s) / sum exp(s)``, no
max subtracted) with ``softmax_dtype="float16"`` overflows as soon as a logit passes
log(65504) ~ 11.09: ``--model-args '{"softmax": "naive", "softmax_dtype": "float16",
"logit_scale": 32}'`` makes ``layers.0.attn.softmax`` non-finite.
"""

import math

import torch
from torch import nn

VOCAB = 64


class Softmax(nn.Module):
    """The attention's softmax as a module of its own, so the probe names it.

    ``stable``: subtract the row max first (what ``torch.softmax`` does); ``naive``: not.
    ``dtype``: the format the scores are stored and exponentiated in.
    """

    def __init__(self, kind: str = "stable", dtype: str = "float32") -> None:
        super().__init__()
        if kind not in ("stable", "naive"):
            raise ValueError(f"softmax must be 'stable' or 'naive', got {kind!r}")
        self.kind = kind
        self.dtype = getattr(torch, dtype)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        s = scores.to(self.dtype)
        if self.kind == "stable":
            s = s - s.amax(dim=-1, keepdim=True)
        e = torch.exp(s)
        return (e / e.sum(dim=-1, keepdim=True)).to(scores.dtype)


class Attention(nn.Module):
    """Multi-head self-attention; ``logit_scale`` multiplies the scores (1: the usual 1/sqrt(d))."""

    def __init__(self, width: int, heads: int, softmax: Softmax, logit_scale: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.softmax = softmax
        self.scale = logit_scale / math.sqrt(width // heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, w // self.heads).unbind(dim=2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # batch x heads x tokens x head
        weights = self.softmax(q @ k.transpose(-2, -1) * self.scale)
        return self.out((weights @ v).transpose(1, 2).reshape(b, t, w))


class MLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, 4 * width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, width: int, heads: int, softmax: Softmax, logit_scale: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, softmax, logit_scale)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    def __init__(
        self,
        depth: int,
        width: int,
        heads: int,
        softmax: str = "stable",
        softmax_dtype: str = "float32",
        logit_scale: float = 1.0,
        norm: bool = True,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.layers = nn.ModuleList(
            Block(width, heads, Softmax(softmax, softmax_dtype), logit_scale) for _ in range(depth)
        )
        if not norm:  # the witness of "LayerNorm resets scale": the same network without it
            for block in self.layers:
                assert isinstance(block, Block)
                block.ln1, block.ln2 = nn.Identity(), nn.Identity()  # type: ignore[assignment]
        self.norm = nn.LayerNorm(width) if norm else nn.Identity()
        self.head = nn.Linear(width, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.layers:
            x = block(x)
        out: torch.Tensor = self.head(self.norm(x))
        return out


def build(
    depth: int = 2,
    width: int = 32,
    heads: int = 4,
    softmax: str = "stable",
    softmax_dtype: str = "float32",
    logit_scale: float = 1.0,
    norm: bool = True,
) -> Transformer:
    """The factory ``--model examples.transformer:build`` calls (``--model-args`` as kwargs)."""
    return Transformer(depth, width, heads, softmax, softmax_dtype, logit_scale, norm)


def make_batch(batch: int = 4, tokens: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and next-token targets (the same ids shifted), from a fixed seed."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (batch, tokens + 1), generator=gen)
    return ids[:, :-1], ids[:, 1:]
