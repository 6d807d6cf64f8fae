"""Timing and memory: median windows of calls (CUDA synchronised at their edges), peak RSS."""

from __future__ import annotations

import contextlib
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], calls: int, repeats: int, warmup: int, device: torch.device,
          min_window_s: float = 0.0) -> float:
    """Median seconds per call of `fn`: `warmup` calls, then `repeats` windows of calls.

    Windows rather than single calls: a prefetching DataLoader makes single-call times
    bimodal (a ready batch, or a wait), while a window's average is its throughput. A cheap
    `fn` gets more calls per window (up to 10x), so that a window lasts about `min_window_s`
    (judged from the warm-up) and timer and scheduler noise stay small against it.
    """
    sync(device)
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    sync(device)
    per_window = max(1, calls // repeats)
    if warmup and min_window_s > 0:
        per_call = (time.perf_counter() - t0) / warmup
        per_window = max(per_window, min(10 * per_window, math.ceil(min_window_s / max(per_call, 1e-6))))
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(per_window):
            fn()
        sync(device)
        times.append((time.perf_counter() - t0) / per_window)
    return statistics.median(times)


def rss_now() -> float | None:
    """This process's resident memory now (bytes), where /proc says it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) * 1024
    return None


def max_rss() -> float:
    """The resident-memory high-water mark (bytes) from getrusage."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(rss if sys.platform == "darwin" else rss * 1024)


def reset_max_rss() -> bool:
    """Restart the high-water mark from the current RSS (Linux >= 4.0); False where impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
