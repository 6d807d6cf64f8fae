"""Where the work runs: the device (`device=auto|cpu|cuda|mps`) and its number format.

`precision=bf16` runs forward passes and losses under bfloat16 autocast (weights, optimiser
state and the SGD update stay float32): about twice the throughput on recent GPUs. CPU
runs default to float32, where bf16 autocast is usually slower.
"""

from __future__ import annotations

import contextlib

import torch

from ssl_bench.errors import UserError

PRECISIONS = ("fp32", "bf16")


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; an unavailable explicit device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"device={name} is not a device name; use auto, cpu, cuda, cuda:1 or mps") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name} asked for, but CUDA is not available; use device=auto or cpu")
    return device


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for `precision` on `device` (a no-op for fp32)."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
