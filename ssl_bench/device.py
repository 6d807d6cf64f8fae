"""Where the work runs: the device (`device=auto|cpu|cuda|mps`) and its number format.

`precision=bf16` runs forward passes and losses under bfloat16 autocast (weights, optimiser
state and the SGD update stay float32). `precision=auto` (the default) picks bf16 only where
the hardware computes it natively, and fp32 elsewhere:

- CUDA GPUs that support bf16 (Ampere and later);
- CPUs with AMX-BF16 or AVX512-BF16 (`lscpu` flags `amx_bf16`, `avx512_bf16`). Measured
  with `make perf` (training steps of the conv backbones, side by side in one run): 2.2x
  (small) to 2.6x (64-128-256, two convs per stage) faster on an AMD EPYC with
  AVX512-BF16; 1.8x to 3.7x on an Intel Xeon with AMX. CPUs without these instructions
  emulate bf16 and are slower than fp32, so they stay in fp32.

The resolved precision is part of a run's and a pretraining's identity: bf16 and fp32
results are never mixed.
"""

from __future__ import annotations

import contextlib
import os
import platform

import torch

from ssl_bench.errors import UserError

PRECISIONS = ("fp32", "bf16")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # native bf16 arithmetic on x86 CPUs


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not there, e.g. macOS)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_info(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where it is not there)."""
    info: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    break  # the end of the first processor's block
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def machine_name(device: torch.device, path: str = "/proc/cpuinfo") -> str:
    """The machine a result was measured on, in words, for the leaderboard's `machine` column.

    CPU model names here are often vague ("AMD EPYC" names Zen 3 and Zen 5 alike), so the
    family/model numbers, the core count and whether bf16 is native go with it: a row's
    seconds, and which precision `auto` picked, depend on them.
    """
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type != "cpu":
        return device.type
    info = cpu_info(path)
    name = info.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    parts = [name]
    if "cpu family" in info and "model" in info:
        parts.append(f"family {info['cpu family']} model {info['model']}")
    parts.append(f"{os.cpu_count() or '?'} CPUs")
    flags = set(info.get("flags", "").split())
    if flags:
        parts.append("bf16 native" if flags & set(CPU_BF16_FLAGS) else "no native bf16")
    return ", ".join(parts)


def resolve_precision(name: str, device: torch.device, flags: set[str] | None = None) -> str:
    """`auto` -> `bf16` where `device` computes bf16 natively, else `fp32`; others unchanged."""
    if name != "auto":
        if name not in PRECISIONS:
            raise UserError(f"precision must be auto or one of {PRECISIONS}, got {name!r}")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        flags = cpu_flags() if flags is None else flags
        return "bf16" if flags & set(CPU_BF16_FLAGS) else "fp32"
    return "fp32"  # MPS: bf16 autocast support varies by OS version


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
