"""What every run writes next to its results: git sha, times, atomic files, JSON lines."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from filelock import FileLock, Timeout

from ssl_bench.configs import CHECKOUT


@functools.lru_cache(maxsize=1)
def git_sha() -> str:
    """The project's commit, with `-dirty` when tracked files have uncommitted changes.

    Read once per process, when the code has just been imported: in a sweep, later jobs
    run the code loaded at the start even if the checkout moves on meanwhile. An installed
    copy has no commit: `unknown` (asking git in site-packages would name the commit of
    whatever repository the environment happens to sit in).
    """
    if CHECKOUT is None:
        return "unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=CHECKOUT, check=True,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=CHECKOUT, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@functools.lru_cache(maxsize=1)
def _default_file_mode() -> int:
    """The mode `open()` would give a new file: 0o666 less the umask.

    mkstemp creates 0o600 files; renamed into place they would hide a shared leaderboard or
    pretraining cache from the rest of a group on a cluster. Linux reports the umask in
    /proc; elsewhere it is read by setting it back at once.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a node crash right after it keeps the new file)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder; the rename is atomic all the same
        pass
    finally:
        os.close(fd)


@contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A new temporary file beside `path`, renamed over it when the block ends without error.

    The temporary name is unique per call (mkstemp: O_EXCL, random suffix), so concurrent
    writers on one host or on several hosts sharing a file system never write into the same
    temporary file; pids alone collide across cluster nodes. The data is fsynced before the
    rename, so a crash leaves either the old file or the complete new one, never a torn or
    empty one; an error or kill in the block leaves `path` untouched. The file keeps the
    mode of the one it replaces (a new one gets the umask's default).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = _default_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically: readers see the old file or the new one."""
    with replacing(path) as f:
        f.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    """`torch.save` through `replacing`: a killed or crashed save never leaves a torn checkpoint."""
    import torch  # here, so the leaderboard (which imports this module) starts without torch

    with replacing(path) as f:
        torch.save(obj, f)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One JSON object per line; flushed at once so `tail -f` shows progress."""
    with open(path, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")


@contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """The folder's `.lock`, held for the block; says so when another job holds it first.

    Jobs that share a pretraining or a search wait here instead of computing it twice; the
    message explains a job that seems to do nothing meanwhile.
    """
    lock = FileLock(str(folder / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logging.getLogger("ssl_bench").info(
            "waiting for another job to finish %s in %s (its lock: %s)", what, folder, lock.lock_file)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _as_result(result_type: type, values: dict[str, Any]) -> Any:
    """`values` as a `result_type` (a dataclass), keys and types checked; a ValueError that
    names the first wrong key otherwise."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(result_type).validate_python(values)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        key = ".".join(str(part) for part in first["loc"]) or "result"
        raise ValueError(f"result.{key}: {first['msg'].lower()}"
                         f"{f' ({len(exc.errors())} problems)' if len(exc.errors()) > 1 else ''}") from None


class CacheEntry:
    """One cached computation in its own folder (a pretraining, a search): see `cache_entry`."""

    def __init__(self, folder: Path, done_name: str, writer: bool, result_type: type | None = None) -> None:
        self.folder, self.done, self.writer = folder, folder / done_name, writer
        self.result_type = result_type
        self.result: Any = None  # the finished record's result, as a `result_type`
        self.record: dict[str, Any] | None = self._read()

    def _read(self) -> dict[str, Any] | None:
        """The finished record, verified: an unreadable or incomplete one, or a result that
        is not a `result_type` (keys and types), counts as not finished (the computation
        resumes from its own checkpoint), with a warning."""
        if not self.done.exists():
            return None
        try:
            record = json.loads(self.done.read_text())
            if not isinstance(record, dict) or not isinstance(record.get("result"), dict):
                raise ValueError("no 'result' object")
            if self.result_type is not None:
                self.result = _as_result(self.result_type, record["result"])
        except (OSError, ValueError) as exc:
            logging.getLogger("ssl_bench").warning(
                "ignoring %s (%s): the computation runs again and resumes from its checkpoint",
                self.done, " ".join(str(exc).split())[:300])
            return None
        return record

    def discard(self, problem: str, then: str) -> None:
        """A finished record whose outputs turned out bad: moved aside (kept for a look), so
        the computation runs again; `problem` and `then` go into the warning."""
        aside = self.done.with_name(f"{self.done.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
        if self.writer:
            self.done.replace(aside)
        logging.getLogger("ssl_bench").warning("%s; moved %s to %s and %s", problem, self.done.name,
                                               aside.name, then)
        self.record, self.result = None, None

    def finish(self, result: dict[str, Any], **about: Any) -> None:
        """Mark the computation finished with its `result`, the code and time it ran with, and
        `about` (e.g. the machine and precision: what its seconds were measured on)."""
        if self.writer:
            atomic_write_json(self.done, {"result": result, "git_sha": git_sha(), "finished_at": now_iso(),
                                          **about})


@contextmanager
def cache_entry(folder: Path, what: str, identity: dict[str, Any], done_name: str,
                writer: bool = True, result_type: type | None = None) -> Iterator[CacheEntry]:
    """The cache folder of one computation, locked for the block.

    The one implementation behind the pretraining and the search caches: the folder is
    created and locked (concurrent jobs with the same computation wait instead of doing it
    twice), `entry.record` holds the finished record when there is one, and otherwise the
    identity goes to `config.yaml` before any work, so a half-done folder says what it is.
    `writer=False` (ranks > 0 under torchrun) reads but neither locks nor writes.
    `result_type` (a dataclass) is what the finished record's result must be.
    """
    if writer:
        folder.mkdir(parents=True, exist_ok=True)
    lock = folder_lock(folder, what) if writer else contextlib.nullcontext()
    with lock:
        entry = CacheEntry(folder, done_name, writer, result_type)
        if entry.record is None and writer:
            from omegaconf import OmegaConf

            atomic_write_bytes(folder / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(identity)).encode())
        yield entry

