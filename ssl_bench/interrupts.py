"""Ctrl-C and SIGTERM end a command with one line and the shell's exit status, no traceback.

Every file a run writes is replaced atomically (`runlog.replacing`) and every finished piece
(a row, an epoch's checkpoint, a search epoch) is reused by the next run, so an interrupt
loses at most the piece in flight. What is left to say is that, in one line: SIGINT ends
with status 130 and SIGTERM with 143 (128 + the signal's number), as a shell reports them.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TypeVar

T = TypeVar("T")


class Terminated(BaseException):
    """Raised by the SIGTERM handler: unwinds like KeyboardInterrupt (not caught by
    `except Exception`), so temporary files are removed and locks released on the way out."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextmanager
def stop_cleanly(prog: str) -> Iterator[None]:
    """Run the block; on Ctrl-C or SIGTERM print `<prog>: interrupted ...` and exit 130 / 143."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    try:
        yield
    except KeyboardInterrupt:
        _stop(prog, "interrupted (Ctrl-C)", 130)
    except Terminated:
        _stop(prog, "terminated (SIGTERM)", 143)
    finally:
        if in_main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop(prog: str, what: str, status: int) -> None:
    print(f"\n{prog}: {what}; finished work is kept: run the same command again to continue",
          file=sys.stderr)
    sys.exit(status)


def interruptible(prog: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """`stop_cleanly(prog)` around a whole entry point (a decorator for `main`)."""
    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def entry(*args: object, **kwargs: object) -> T:
            with stop_cleanly(prog):
                return fn(*args, **kwargs)
        return entry
    return wrap
