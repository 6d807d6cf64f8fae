"""Index streams and chunked inference: the two ways the code walks over a tensor data set."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch


def index_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of indices into range(n): each pass is a fresh permutation.

    Partial batches at the end of a pass are dropped (every step sees `batch_size` items);
    a set smaller than one batch is used whole at every step.
    """
    batch_size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start:start + batch_size]


def map_chunks(fn: Callable[[torch.Tensor], torch.Tensor], data: torch.Tensor,
               chunk: int) -> torch.Tensor:
    """`fn` applied to consecutive chunks of `data`, outputs concatenated (bounds memory)."""
    return torch.cat([fn(data[i:i + chunk]) for i in range(0, len(data), chunk)])
