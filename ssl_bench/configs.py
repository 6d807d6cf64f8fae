"""Where the Hydra configs are found: a checkout's `conf/`, or the installed package `ssl_bench.conf`.

The configs live in the repository's top-level `conf/` folder (the documented layout), and
pyproject.toml ships that folder inside the package as `ssl_bench.conf` (a `package-dir`
mapping, every YAML file as package data). Two cases, decided once at import:

- Imported from a checkout (an editable install, `make setup`, or the source tree on
  PYTHONPATH): the checkout's own `conf/` folder. Code and configs then always come from
  the same tree, even in an environment where another checkout's editable install maps
  `ssl_bench.conf` to its own folder.
- Installed (`pip install .`, a wheel): Hydra's package search path, `pkg://ssl_bench.conf`,
  and `importlib.resources` for the few files read directly.

`CONFIG_PATH` is what `hydra.main(config_path=...)` takes, `initialize` what the compose
API takes, `files()` the folder as a traversable for reading one file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

PACKAGE = "ssl_bench.conf"
VERSION_BASE = "1.3"


def _checkout() -> Path | None:
    """The repository this code was imported from, or None for an installed copy.

    A checkout has the project file and the config folder beside the package; site-packages
    has neither.
    """
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "conf" / "config.yaml").is_file():
        return root
    return None


CHECKOUT = _checkout()
CONFIG_PATH = str(CHECKOUT / "conf") if CHECKOUT is not None else f"pkg://{PACKAGE}"


def files() -> Traversable:
    """The config folder, to read a file from: `files() / "task" / "rotation.yaml"`."""
    return CHECKOUT / "conf" if CHECKOUT is not None else resources.files(PACKAGE)


@contextmanager
def initialize() -> Iterator[None]:
    """Hydra's compose API pointed at the configs: `with initialize(): compose("config")`."""
    from hydra import initialize_config_dir, initialize_config_module

    if CHECKOUT is not None:
        with initialize_config_dir(config_dir=str(CHECKOUT / "conf"), version_base=VERSION_BASE):
            yield
    else:
        with initialize_config_module(config_module=PACKAGE, version_base=VERSION_BASE):
            yield


def preset(group: str, name: str) -> dict | None:
    """The shipped config `conf/<group>/<name>.yaml` as a plain dict, or None when there is
    no such file (a name the user gave a config of their own)."""
    from omegaconf import DictConfig, OmegaConf

    path = files() / group / f"{name}.yaml"
    if not path.is_file():
        return None
    loaded = OmegaConf.create(path.read_text(encoding="utf-8"))
    return OmegaConf.to_container(loaded) if isinstance(loaded, DictConfig) else None  # type: ignore[return-value]
