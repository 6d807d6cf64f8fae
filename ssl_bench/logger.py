"""Per-step scalars of a run, and its task's picture: a CSV, TensorBoard events, or nothing.

`logger=` in the configuration picks one (`conf/logger/`):

- `csv` (default): every scalar appended to `<run_dir>/scalars.csv` (tag, step, value,
  wall_time), readable without TensorBoard;
- `tensorboard`: TensorBoard event files in `<run_dir>/tensorboard/` (the tensorboard
  package's writer), plus the picture `ssl-bench-show` draws of the task;
- `none`: nothing.

What is logged: the pretraining's loss, learning rate and pretext metrics at each step,
the evaluator's loss at each step of each K, and every leaderboard row's accuracy with
step = K (a chart of accuracy against K). Per-step scalars are kept every
`logger.every_n_steps` steps. A pretraining's `metrics.jsonl` is written whatever the
logger: it belongs to the resumable pretraining cache, not to the logger.

`run.run` makes the configured logger the *current* one around its work (`opened`), so the
training loops ask `current()` instead of passing a logger through every signature. Outside
a run it is the null logger: `pretrain` and `evaluate` called directly log nothing. Only
rank 0 logs; the other processes of a `torchrun` get the null logger.

A loss is a tensor on the device. `scalar` keeps it (detached) and reads the kept values
back together every `FLUSH_EVERY` scalars and at `close`, so a GPU loop does not wait on
the host at every step because of the logger.
"""

from __future__ import annotations

import contextlib
import csv
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_bench import distributed
from ssl_bench.errors import UserError

KINDS = ("csv", "tensorboard", "none")
FLUSH_EVERY = 256  # scalars kept before they are read back and written
CSV_COLUMNS = ("tag", "step", "value", "wall_time")

Value = float | int | torch.Tensor  # a number, or a one-element tensor (read back later)


class Logger:
    """The interface, and the null logger (`logger=none`, or outside a run): it keeps nothing."""

    takes_images = False  # False: `image` drops the picture, so callers need not draw it

    def due(self, step: int) -> bool:
        """Whether per-step scalars are recorded at training step `step` (`every_n_steps`)."""
        return False

    def scalar(self, tag: str, value: Value, step: int) -> None:
        """Record `value` under `tag` at `step`."""

    def image(self, tag: str, image: np.ndarray | Any, step: int) -> None:
        """Record a picture: an H×W×3 array (uint8, or floats in [0, 1]) or a matplotlib figure."""

    def close(self) -> None:
        """Write whatever is kept and release the files."""


def _to_floats(values: list[Value]) -> list[float]:
    """`values` as Python floats, with one read from each device rather than one per value."""
    out = [v if isinstance(v, torch.Tensor) else float(v) for v in values]
    by_device: dict[torch.device, list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            by_device.setdefault(v.device, []).append(i)
    for rows in by_device.values():
        read = torch.stack([values[i].float().reshape(()) for i in rows]).tolist()  # type: ignore[union-attr]
        for i, x in zip(rows, read):
            out[i] = x
    return out  # type: ignore[return-value]


class _Buffered(Logger):
    """Keeps scalars, tensors as they are, and writes them (`_write`) in batches of floats."""

    def __init__(self, every_n_steps: int = 1, flush_every: int = FLUSH_EVERY):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1, got {every_n_steps}")
        self.every_n_steps, self.flush_every = every_n_steps, flush_every
        self._kept: list[tuple[str, Value, int, float]] = []
        self._closed = False

    def due(self, step: int) -> bool:
        return step % self.every_n_steps == 0

    def scalar(self, tag: str, value: Value, step: int) -> None:
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(f"{tag}: a scalar is one value, not a tensor of shape {tuple(value.shape)}")
            value = value.detach()
        self._kept.append((tag, value, int(step), time.time()))
        if len(self._kept) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Read the kept values back and write them."""
        if not self._kept:
            return
        values = _to_floats([value for _, value, _, _ in self._kept])
        self._write([(tag, step, value, wall) for (tag, _, step, wall), value
                     in zip(self._kept, values)])
        self._kept = []

    def _write(self, rows: list[tuple[str, int, float, float]]) -> None:
        """Write (tag, step, value, wall_time) rows."""
        raise NotImplementedError

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.flush()


class CsvLogger(_Buffered):
    """Scalars appended to a CSV file (tag, step, value, wall_time); pictures are not kept
    (`ssl-bench-show` draws the same one)."""

    def __init__(self, path: Path, every_n_steps: int = 1, flush_every: int = FLUSH_EVERY):
        super().__init__(every_n_steps, flush_every)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = self.path.open("a", newline="")  # a second run into the folder adds rows
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(CSV_COLUMNS)

    def _write(self, rows: list[tuple[str, int, float, float]]) -> None:
        self._csv.writerows(rows)
        self._file.flush()

    def close(self) -> None:
        if not self._closed:
            super().close()
            self._file.close()


class TensorBoardLogger(_Buffered):
    """Scalars and pictures as TensorBoard events in `folder`, by the tensorboard package's writer."""

    takes_images = True

    def __init__(self, folder: Path, every_n_steps: int = 1, flush_every: int = FLUSH_EVERY):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("logger=tensorboard needs the tensorboard package: pip install "
                            "'tensorboard>=2.14' (or choose logger=csv)") from None
        super().__init__(every_n_steps, flush_every)
        self.folder = Path(folder)
        self._writer = SummaryWriter(log_dir=str(self.folder), flush_secs=30)

    def _write(self, rows: list[tuple[str, int, float, float]]) -> None:
        for tag, step, value, wall in rows:
            self._writer.add_scalar(tag, value, step, walltime=wall)

    def image(self, tag: str, image: np.ndarray | Any, step: int) -> None:
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"{tag}: a picture is an H×W×3 array, not one of shape {image.shape}")
            self._writer.add_image(tag, image, step, dataformats="HWC")
        else:  # a matplotlib figure: drawn, then closed
            self._writer.add_figure(tag, image, step, close=True)

    def close(self) -> None:
        if not self._closed:
            super().close()
            self._writer.close()


def make(cfg: Mapping[str, Any], run_dir: Path) -> Logger:
    """The logger the `logger` node of the configuration asks for, writing under `run_dir`."""
    kind, every = cfg["kind"], int(cfg["every_n_steps"])
    if kind == "csv":
        return CsvLogger(Path(run_dir) / "scalars.csv", every)
    if kind == "tensorboard":
        return TensorBoardLogger(Path(run_dir) / "tensorboard", every)
    if kind == "none":
        return Logger()
    raise UserError(f"logger.kind={kind!r} is not a logger; choose one of {', '.join(KINDS)}")


_current: Logger = Logger()


def current() -> Logger:
    """The logger of the run in progress (the null logger outside `opened`)."""
    return _current


@contextlib.contextmanager
def opened(cfg: Mapping[str, Any], run_dir: Path) -> Iterator[Logger]:
    """The configured logger as the current one inside the block, closed after it (also when
    the block fails, so what was logged until then is written). Rank 0 only: the other
    processes get the null logger."""
    global _current
    sink = make(cfg, run_dir) if distributed.context().is_main else Logger()
    previous, _current = _current, sink
    try:
        yield sink
    finally:
        _current = previous
        sink.close()
