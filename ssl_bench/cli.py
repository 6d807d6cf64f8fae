"""The `ssl-bench` command (and `python -m ssl_bench`): a Hydra application around `run`.

Examples:
    ssl-bench profile=smoke data=synthetic
    ssl-bench -m task=rotation,random seed=0,1,2 data.root=../shared/data/cifar10-jpeg
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ssl_bench.errors import UserError
from ssl_bench.leaderboard import format_summary, read
from ssl_bench.run import run
from ssl_bench.runlog import git_sha

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("ssl_bench")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _app(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run(cfg, run_dir)
    except UserError as exc:
        # a problem the user can fix: one clear message, no traceback, non-zero exit
        log.error("%s", exc)
        print(f"ssl-bench: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if HydraConfig.get().mode == RunMode.RUN:  # a sweep prints it once, at the end (Makefile)
        print(format_summary(read(Path(cfg.leaderboard.path))))


def main() -> None:
    git_sha()  # pin the commit of the code this process imported, before any job runs
    _app()


if __name__ == "__main__":
    main()
