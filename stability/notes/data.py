"""Minibatch index iteration with the notes' three answers to "n is not a multiple of B".

The notes (linear regression QA): take what is left (``keep``), drop it (``drop``), or fill
the short batch from the next epoch (``fill``). Each epoch shuffles with its own
permutation, derived from the generator's seed and the epoch number, so any epoch can be
regenerated on its own (resuming, or peeking at the next epoch for ``fill``) without
consuming the caller's generator.

What each policy visits in epoch ``e`` (``n`` samples, batch size ``B``, ``r = n mod B``):

- ``keep``: ``ceil(n / B)`` batches, the last one of size ``r`` when ``r > 0``; every sample
  exactly once.
- ``drop``: ``n // B`` full batches; the ``r`` samples at the end of the epoch's permutation
  are skipped, every other sample is visited exactly once.
- ``fill``: the epochs' permutations are concatenated into one stream that is cut into full
  batches of ``B``; epoch ``e`` owns the batches that *start* inside its permutation. Its last
  batch is completed with the head of epoch ``e + 1``'s permutation, and epoch ``e + 1`` then
  starts after those borrowed samples. So every batch is full and each pass over the stream
  (``n`` consecutive positions starting at a multiple of ``n``) visits every sample exactly
  once; epoch ``e`` itself visits ``perm_e`` minus its borrowed head plus ``perm_{e+1}``'s.
  A batch that straddles two epochs can hold the same sample twice (once from each).
"""

from collections.abc import Iterator

import torch

from stability.core.registry import lookup
from stability.errors import StabilityError

REMAINDER_POLICIES: dict[str, str] = {
    "keep": "yield the short last batch",
    "drop": "skip the samples that do not fill a batch",
    "fill": "complete the short batch from the next epoch's permutation",
}

_GOLDEN = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads (seed, epoch) over seed space
_SEED_MOD = 2**64


def epoch_permutation(n: int, epoch: int, generator: torch.Generator) -> torch.Tensor:
    """The shuffled order of epoch ``epoch``: a function of ``generator.initial_seed()`` only."""
    seed = (generator.initial_seed() + (epoch + 1) * _GOLDEN) % _SEED_MOD
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _check(n: int, batch_size: int, policy: str, epoch: int) -> None:
    lookup("remainder policy", policy, REMAINDER_POLICIES)
    if n < 1:
        raise StabilityError(f"number of samples must be >= 1; got n={n!r}")
    if batch_size < 1:
        raise StabilityError(f"batch size must be >= 1; got batch_size={batch_size!r}")
    if epoch < 0:
        raise StabilityError(f"epoch must be >= 0; got epoch={epoch!r}")
    if policy != "keep" and batch_size > n:
        # drop would yield nothing; fill would have epochs without any batch.
        raise StabilityError(
            f"batch size {batch_size} exceeds n={n} under policy {policy!r}; "
            "use policy 'keep' or a batch size <= n"
        )


def batches(
    n: int, batch_size: int, policy: str, epoch: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Yield the int64 sample indices of each minibatch of ``epoch`` under ``policy``.

    See the module docstring for exactly which samples each policy visits.
    """
    _check(n, batch_size, policy, epoch)
    perm = epoch_permutation(n, epoch, generator)
    if policy in ("keep", "drop"):
        full = n - n % batch_size if policy == "drop" else n
        for start in range(0, full, batch_size):
            yield perm[start : min(start + batch_size, full)]
        return
    # fill: stream positions p = epoch * n + offset; batch j covers [j B, (j + 1) B).
    first = -(-epoch * n // batch_size)  # ceil(epoch n / B): first batch starting in this epoch
    stop = -(-(epoch + 1) * n // batch_size)
    stream = torch.cat([perm, epoch_permutation(n, epoch + 1, generator)])  # B <= n suffices
    for j in range(first, stop):
        start = j * batch_size - epoch * n
        yield stream[start : start + batch_size]
