"""Index streams and chunked inference: the two ways the code walks over a tensor data set."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from ssl_bench.seeds import derive


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
        gen = torch.Generator().manual_seed(derive(seed, "order", epoch))
        order = torch.randperm(n, generator=gen)
        for b in range(offset, per_pass):
            yield order[b * batch_size:(b + 1) * batch_size]
        epoch, offset = epoch + 1, 0


def map_chunks(fn: Callable[[torch.Tensor], torch.Tensor], data: torch.Tensor,
               chunk: int) -> torch.Tensor:
    """`fn` applied to consecutive chunks of `data`, outputs concatenated (bounds memory).

    Each chunk's output is copied into one preallocated tensor, so the peak is the output
    plus one chunk, not twice the output as with a list and `torch.cat`. The output keeps
    the first chunk's memory format (channels_last feature maps stay channels_last).
    """
    out: torch.Tensor | None = None
    for i in range(0, len(data), chunk):
        part = fn(data[i:i + chunk])
        if out is None:
            fmt = (torch.channels_last if part.ndim == 4 and part.is_contiguous(
                memory_format=torch.channels_last) and not part.is_contiguous()
                else torch.contiguous_format)
            out = torch.empty((len(data), *part.shape[1:]), dtype=part.dtype, device=part.device,
                              memory_format=fmt)
        out[i:i + len(part)] = part
    if out is None:
        raise ValueError("map_chunks needs at least one item")
    return out
