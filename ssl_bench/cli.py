"""The `ssl-bench` command (and `python -m ssl_bench`): a Hydra application around `run`.

Examples:
    ssl-bench profile=smoke data=synthetic
    ssl-bench -m task=rotation,random seed=0,1,2 data.root=../shared/data/cifar10-jpeg
"""

from __future__ import annotations

import errno
import logging
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from ssl_bench import configs
from ssl_bench.distributed import add_rank_overrides, context
from ssl_bench.errors import UserError
from ssl_bench.interrupts import stop_cleanly
from ssl_bench.leaderboard import check_writable as check_leaderboard
from ssl_bench.leaderboard import format_summary, read
from ssl_bench.paths import register_resolvers, resolve_path
from ssl_bench.run import run
from ssl_bench.runlog import git_sha

# the config folder on disk (the tests compose from it); Hydra apps take `configs.CONFIG_PATH`
CONF_DIR = str(configs.files())
log = logging.getLogger("ssl_bench")
register_resolvers()  # ${ssl_path:...} and ${run_tag:} in the Hydra output folders


def _prog() -> str:
    """The command's name as the user typed it (`python -m ssl_bench` is `ssl-bench`)."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name.startswith("ssl-bench") else "ssl-bench"


def _fail(message: str, logged: bool = True) -> NoReturn:
    """A problem the user can fix: one clear message, no traceback, exit status 2.

    Inside a job the message also goes to the job's log file (`logged`); before any job
    (the configuration check) there is no log file yet, and one line on stderr is all.
    """
    if logged:
        log.error("%s", message)
    print(f"{_prog()}: error: {message}", file=sys.stderr)
    sys.exit(2)


@contextmanager
def clear_errors(kept: str) -> Iterator[None]:
    """Errors the user can fix (bad settings, a full disk) as one message and exit status 2.

    `kept` says what a rerun of the same command reuses ("finished rows and checkpoints").
    """
    try:
        yield
    except UserError as exc:
        _fail(str(exc))
    except OSError as exc:  # a full disk or a folder that became unwritable mid-run
        if exc.errno not in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.ENOENT):
            raise
        _fail(f"cannot write {exc.filename or 'a result file'} ({exc.strerror}); free some space or "
              f"choose a writable paths.runs_dir, then run the same command again: {kept} are kept "
              f"and reused")


def check_writable(folder: Path, what: str) -> None:
    """Fail early, with a clear message, when `folder` cannot be created or written to."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        _fail(f"cannot write to {what} {folder} ({exc.strerror or exc}); choose a writable folder "
              f"(e.g. paths.runs_dir=/some/where) or free some space", logged=False)


def validate_config(config: DictConfig) -> None:
    """The whole configuration checked against `ssl_bench.schema`; a problem ends the command."""
    from ssl_bench.schema import validate

    try:
        validate(config)
    except UserError as exc:
        _fail(str(exc), logged=False)


def sweep_configs(config: DictConfig) -> Iterator[DictConfig]:
    """The configuration of every job a sweep will run, composed as its launcher will."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    loader = GlobalHydra.instance().config_loader()  # as BasicSweeper.sweep builds its jobs
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    for batch in BasicSweeper.split_arguments(parsed, None):
        for overrides in batch:
            yield loader.load_sweep_config(config, list(overrides))


class OutputCheck(Callback):
    """Checks the configuration and the output folders before Hydra creates any run folder.

    A sweep's jobs are all checked first, so a bad value in its fifth job does not cost the
    first four (nor leave their folders behind).
    """

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        validate_config(config)
        self._check_outputs(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        for job in sweep_configs(config):
            validate_config(job)
        self._check_outputs(config)

    @staticmethod
    def _check_outputs(config: DictConfig) -> None:
        check_writable(resolve_path(config.paths.runs_dir), "paths.runs_dir")
        try:  # a folder at its path, a folder that refuses the rename, a file that does not read
            check_leaderboard(resolve_path(config.leaderboard.path))
        except UserError as exc:
            _fail(str(exc), logged=False)


@hydra.main(version_base=configs.VERSION_BASE, config_path=configs.CONFIG_PATH, config_name="config")
def _app(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with clear_errors("finished rows and checkpoints"):
        run(cfg, run_dir)
    # a sweep prints it once, at the end (Makefile); under torchrun rank 0 prints it
    if HydraConfig.get().mode == RunMode.RUN and context().is_main:
        print(format_summary(read(Path(cfg.leaderboard.path))))


def main() -> None:
    git_sha()  # pin the commit of the code this process imported, before any job runs
    add_rank_overrides()  # under torchrun, ranks > 0 write no run folder of their own
    with stop_cleanly("ssl-bench"):
        _app()


if __name__ == "__main__":
    main()
