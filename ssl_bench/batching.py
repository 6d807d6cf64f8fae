"""Index streams and chunked inference: the two ways the code walks over a tensor data set."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch


def index_batches(n: int, batch_size: int, seed: int, start_step: int = 0) -> Iterator[torch.Tensor]:
    """Endless batches of indices into range(n): each pass is a fresh permutation.

    Pass j's permutation is drawn from a generator seeded with (seed, j), so the batch of
    any step is a function of (seed, step) alone: a run resumed at `start_step` sees exactly
    the batches an uninterrupted run would. Partial batches at the end of a pass are
    dropped (every step sees `batch_size` items); a set smaller than one batch is used
    whole at every step.
    """
    batch_size = min(batch_size, n)
    per_pass = n // batch_size
    epoch, offset = divmod(start_step, per_pass)
    while True:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=gen)
        for b in range(offset, per_pass):
            yield order[b * batch_size:(b + 1) * batch_size]
        epoch, offset = epoch + 1, 0


def map_chunks(fn: Callable[[torch.Tensor], torch.Tensor], data: torch.Tensor,
               chunk: int) -> torch.Tensor:
    """`fn` applied to consecutive chunks of `data`, outputs concatenated (bounds memory)."""
    return torch.cat([fn(data[i:i + chunk]) for i in range(0, len(data), chunk)])
