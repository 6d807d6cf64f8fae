"""Pretext tasks: one module per task, each a `PretextTask` subclass named in conf/task/."""

from ssl_bench.tasks.base import PretextTask

__all__ = ["PretextTask"]
