"""What a path setting means, decided once: `~` and `$VARS` expanded, relative to the working
directory, made absolute.

Every path a user can give (the settings in `PATH_SETTINGS`, and the path arguments of the
argparse tools) goes through `resolve_path`, so the process that writes a file and the one
that reads it agree on which file it is: `paths.runs_dir=~/runs` is the same folder for
Hydra's run folder, the pretraining cache and the leaderboard, not `./~/runs` for some of
them. An environment variable that is not set is an error, not a folder named `$VAR`.
"""

from __future__ import annotations

import os
import re
import secrets
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ssl_bench.errors import UserError

# every configuration key that names a file or a folder
PATH_SETTINGS = ("paths.runs_dir", "paths.cache_dir", "leaderboard.path", "data.root", "data.cache_dir",
                 "eval.data.root", "eval.data.cache_dir", "show.path", "backbone.genotype",
                 "derived.backbone.genotype")


def resolve_path(text: str | os.PathLike, what: str = "a path") -> Path:
    """`text` as an absolute path: `~` and `$VAR`/`${VAR}` expanded, relative to the cwd."""
    raw = str(text)
    expanded = os.path.expandvars(os.path.expanduser(raw))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
    if unset:
        raise UserError(f"{what}={raw} uses the environment variable ${unset[0]}, which is not set; "
                        f"set it or give the path itself")
    return Path(os.path.abspath(expanded))


def normalize_paths(cfg: DictConfig) -> None:
    """Replace every path setting of `cfg` by its absolute form, in place (before any work)."""
    for key in PATH_SETTINGS:
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, str) and value and value != "???":
            OmegaConf.update(cfg, key, str(resolve_path(value, key)), merge=False)


def argument_path(text: str) -> Path:
    """An argparse `type=` for path arguments: the same meaning as in the configuration."""
    import argparse

    try:
        return resolve_path(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@lru_cache(maxsize=1)
def process_tag() -> str:
    """A short random tag of this process, in its run folder's name: two runs started in the
    same second (by the clock in their folder names) still get folders of their own."""
    return secrets.token_hex(3)


def register_resolvers() -> None:
    """`${ssl_path:...}` and `${run_tag:}` for the Hydra output folders (conf/config.yaml), and
    `${ssl_checkpoint_name:...}` for conf/task/external.yaml."""
    OmegaConf.register_new_resolver("ssl_path", lambda p: str(resolve_path(p, "paths.runs_dir")),
                                    replace=True)
    OmegaConf.register_new_resolver("run_tag", process_tag, replace=True)
    OmegaConf.register_new_resolver("ssl_checkpoint_name", _checkpoint_name, replace=True)


def _checkpoint_name(path: str) -> str:
    """`${ssl_checkpoint_name:...}`: the default task name of an external checkpoint."""
    from ssl_bench.external import checkpoint_name

    return checkpoint_name(path)
