"""Data-parallel training across processes started by `torchrun` (gloo on CPU, nccl on GPU).

Why results do not depend on the number of processes N:
- every process builds the same *global* batch (same indices, same augmentation and
  pseudo-label draws: the generators are seeded alike), then keeps its own contiguous
  slice of it (`shard`), so the N slices partition exactly the batch one process would use;
- each process's loss is scaled by its share of the images (`Shard.scale`), so DDP's
  gradient average equals the gradient of the global batch's mean loss;
- with `distributed.sync_batchnorm=true` (the default), BatchNorm layers use statistics of
  the global batch (`CrossRankBatchNorm`, which also runs on CPU/gloo, where PyTorch's
  own SyncBatchNorm does not).
What remains is floating-point noise (sums taken in another order). Without synchronised
BatchNorm each process normalises by its slice's statistics, which changes the result.

Only rank 0 writes (checkpoints, logs, rows); the others compute the same steps and
read. A single process (no `torchrun`, or `--nproc_per_node=1`) skips all of this.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ssl_bench.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """Which process this is among how many (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    sync_batchnorm: bool = True          # global-batch BatchNorm statistics (see the module doc)
    find_unused_parameters: bool = True  # DDP's option: some tasks leave modules out of a step

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_context() -> Context:
    """The context `torchrun` describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK)."""
    return Context(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))


_context = Context()
_comm_device = torch.device("cpu")  # where collectives take their tensors (the GPU for nccl)


def context() -> Context:
    """The context set up by `setup` (rank 0 of 1 before that, or without torchrun)."""
    return _context


def setup(device: torch.device, backend: str = "auto", timeout_minutes: float = 30.0,
          sync_batchnorm: bool = True, find_unused_parameters: bool = True
          ) -> tuple[Context, torch.device]:
    """Join the process group `torchrun` started (once per process); returns (context, device).

    On CUDA each process takes the GPU of its local rank. Without torchrun (WORLD_SIZE
    unset or 1) nothing happens and `device` is returned as it is.
    """
    global _context, _comm_device
    ctx = replace(env_context(), sync_batchnorm=sync_batchnorm,
                  find_unused_parameters=find_unused_parameters)
    if not ctx.active:
        return ctx, device
    if device.type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise UserError(f"torchrun started {ctx.world} processes on this node but only "
                            f"{torch.cuda.device_count()} GPUs are visible; lower --nproc_per_node")
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise UserError(f"distributed runs support cpu (gloo) and cuda (nccl), not {device.type}; "
                        f"set device=cpu or device=cuda")
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes),
                                device_id=device if device.type == "cuda" else None)
        if not ctx.is_main:  # the other ranks repeat rank 0's messages: keep their warnings only
            logging.getLogger("ssl_bench").setLevel(logging.WARNING)
    _context, _comm_device = ctx, device
    return ctx, device


def hydra_overrides_for_rank() -> list[str]:
    """Command-line overrides that keep ranks > 0 from writing run folders and Hydra files.

    Every process parses the same command line; only rank 0's Hydra output folder is the
    run's. The others get a temporary folder (removed when the process exits), no
    `.hydra/` copy of the config, and no log file.
    """
    ctx = env_context()
    if not ctx.active or ctx.is_main:
        return []
    scratch = tempfile.mkdtemp(prefix=f"ssl_bench_rank{ctx.rank}_")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return [f"hydra.run.dir={scratch}", f"hydra.sweep.dir={scratch}", "hydra.output_subdir=null",
            "hydra/job_logging=stdout"]


def add_rank_overrides() -> None:
    """Append `hydra_overrides_for_rank()` to sys.argv (call before Hydra parses it)."""
    sys.argv.extend(hydra_overrides_for_rank())


def barrier() -> None:
    if _context.active:
        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (any picklable object)."""
    if not _context.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. decoding and caching a data set), then the others."""
    if not _context.is_main:
        barrier()
    yield
    if _context.is_main:
        barrier()


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of `values` over the processes (unchanged when alone)."""
    if not _context.active:
        return values
    values = values.detach().to(_comm_device, copy=True)
    dist.all_reduce(values)
    return (values / _context.world).cpu()


@dataclass
class Shard:
    """This process's slice of a global batch, and the weight of its loss."""

    inputs: Any
    targets: Any
    scale: float  # world * (images in this slice) / (images in the global batch)


def _slice_rows(tree: Any, images: int, start: int, stop: int) -> Any:
    """Rows of every tensor in `tree` (tensors, dicts, tuples, lists) for images start:stop.

    A tensor with m rows per image (rotation's 4 copies, jigsaw's 9 tiles) gives rows
    m*start : m*stop, so inputs and targets stay aligned whatever their row layout.
    """
    if isinstance(tree, torch.Tensor):
        if tree.dim() == 0:
            return tree
        per_image, rest = divmod(tree.shape[0], images)
        if rest:
            raise ValueError(f"a batch tensor has {tree.shape[0]} rows, not a multiple of its "
                             f"{images} images; it cannot be split between processes")
        return tree[per_image * start:per_image * stop]
    if isinstance(tree, dict):
        return {k: _slice_rows(v, images, start, stop) for k, v in tree.items()}
    if isinstance(tree, tuple | list):
        return type(tree)(_slice_rows(v, images, start, stop) for v in tree)
    return tree


def shard(inputs: Any, targets: Any, images: int, ctx: Context | None = None) -> Shard:
    """This process's contiguous share of a global batch built from `images` images."""
    ctx = ctx or _context
    if not ctx.active:
        return Shard(inputs, targets, 1.0)
    if images < ctx.world:
        raise UserError(f"a batch of {images} images cannot be split between {ctx.world} processes; "
                        f"raise the batch size or use fewer processes")
    bounds = [round(images * r / ctx.world) for r in range(ctx.world + 1)]
    start, stop = bounds[ctx.rank], bounds[ctx.rank + 1]
    return Shard(_slice_rows(inputs, images, start, stop), _slice_rows(targets, images, start, stop),
                 ctx.world * (stop - start) / images)


class CrossRankBatchNorm:
    """Training-mode BatchNorm over the global batch: statistics summed across processes.

    Mixed into a layer's own class while `synced_batchnorm` is active, so parameters,
    buffers, state-dict keys and optimiser entries stay those of the layer. The all-reduce
    is differentiable: its backward sums the gradients of every process, which is what the
    global batch's loss needs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn: _BatchNorm = self  # type: ignore[assignment]
        if not (bn.training and _context.active):
            return super().forward(x)  # type: ignore[misc]
        dims = [0, *range(2, x.dim())]
        c = x.shape[1]
        x32 = x.float()
        count = torch.full((1,), x.numel() / c, device=x.device, dtype=torch.float32)
        total = dist_fn.all_reduce(torch.cat([x32.sum(dims), (x32 * x32).sum(dims), count]))
        n = total[-1]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0)
        if bn.track_running_stats and bn.running_mean is not None:
            with torch.no_grad():
                bn.num_batches_tracked.add_(1)
                momentum = (1.0 / float(bn.num_batches_tracked) if bn.momentum is None
                            else bn.momentum)
                bn.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                bn.running_var.mul_(1 - momentum).add_(momentum * var.detach() * n / (n - 1).clamp_min(1))
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x32 - mean.view(shape)) * torch.rsqrt(var.view(shape) + bn.eps)
        if bn.affine:
            y = y * bn.weight.view(shape) + bn.bias.view(shape)
        return y.to(x.dtype)


_CROSS_RANK_CLASSES: dict[type, type] = {}


def _cross_rank_class(cls: type) -> type:
    if cls not in _CROSS_RANK_CLASSES:
        _CROSS_RANK_CLASSES[cls] = type(f"CrossRank{cls.__name__}", (CrossRankBatchNorm, cls), {})
    return _CROSS_RANK_CLASSES[cls]


@contextlib.contextmanager
def synced_batchnorm(*modules: nn.Module) -> Iterator[None]:
    """Inside the block, every BatchNorm layer of `modules` uses global-batch statistics.

    Each layer's class is swapped for a cross-rank subclass and back on exit, so the model
    outside the block (saved, evaluated) is plain PyTorch. A no-op for a single process.
    """
    swapped: list[tuple[nn.Module, type]] = []
    if _context.sync_batchnorm and _context.active:
        for module in modules:
            for layer in module.modules():
                if isinstance(layer, _BatchNorm) and not isinstance(layer, CrossRankBatchNorm):
                    swapped.append((layer, type(layer)))
                    layer.__class__ = _cross_rank_class(type(layer))
    try:
        yield
    finally:
        for layer, cls in swapped:
            layer.__class__ = cls


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` wrapped in DistributedDataParallel, or itself for a single process.

    Wrap after choosing which parameters train (DDP keeps those with requires_grad).
    """
    if not _context.active:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=ids, find_unused_parameters=_context.find_unused_parameters)
