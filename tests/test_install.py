"""The project as users install it: `pip install .`, a wheel, and `make setup`'s editable install.

Each test builds from a copy of the checkout's package files (a build writes `build/` and
`*.egg-info` beside its sources), installs it into a fresh venv without dependencies, and
runs the installed commands from a folder outside the checkout. The venv sees the running
interpreter's packages (torch, hydra, ...) through a .pth file instead of reinstalling them;
.pth files inside a folder added that way are not processed, so an editable install of a
checkout in that environment does not leak into the venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow

SOURCES = ("pyproject.toml", "README.md", "ssl_bench", "conf")  # what the build reads
# the environment of every command here: nothing from the checkout, no package index
ENV = {**{k: v for k, v in os.environ.items()
          if k not in ("PYTHONPATH", "PYTHONHOME", "SSL_BENCH_CACHE") and not k.startswith("PIP_")},
       "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def _run(command: list[str | Path], cwd: Path, timeout: int = 600) -> str:
    res = subprocess.run([str(c) for c in command], cwd=cwd, env=ENV, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, f"{command} exited {res.returncode}:\n{res.stderr[-3000:]}"
    return res.stdout


def _sources(tmp_path: Path) -> Path:
    """A copy of what the build reads, so that it writes nothing into the checkout."""
    src = tmp_path / "src"
    for name in SOURCES:
        if (PROJECT_ROOT / name).is_dir():
            shutil.copytree(PROJECT_ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, src / name)
    return src


def _venv(path: Path) -> Path:
    """A fresh venv whose packages are its own first, then those of the running interpreter;
    its `python -m pip` is the running interpreter's pip. Returns the venv's bin folder."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, env=ENV)
    bin_dir = path / "bin"
    own = _run([bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
               path).strip()
    shared = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (Path(own) / "_shared_dependencies.pth").write_text("".join(f"{p}\n" for p in shared))
    _run([bin_dir / "python", "-m", "pip", "--version"], path)  # pip (and setuptools) visible
    return bin_dir


def _where(bin_dir: Path, cwd: Path) -> tuple[Path, str, Path]:
    """Where the venv's ssl_bench is imported from, its Hydra config path, its config folder."""
    out = _run([bin_dir / "python", "-c",
                "import ssl_bench, ssl_bench.configs as c\n"
                "print(ssl_bench.__file__); print(c.CONFIG_PATH); print(c.files())"], cwd)
    package, config_path, folder = out.strip().splitlines()
    return Path(package).parent, config_path, Path(folder)


def _main_config_source(run_dir: Path) -> tuple[str, str]:
    """(schema, path) of the configs a run was composed from, as Hydra recorded them."""
    sources = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.config_sources
    main = next(s for s in sources if s.provider == "main")
    return main.schema, main.path


def test_pip_install_runs_a_job_outside_the_checkout(tmp_path):
    src, work = _sources(tmp_path), tmp_path / "work"
    work.mkdir()
    bin_dir = _venv(tmp_path / "venv")
    _run([bin_dir / "python", "-m", "pip", "install", "--no-deps", "--no-build-isolation", src], tmp_path)

    package, config_path, folder = _where(bin_dir, work)
    assert package.is_relative_to(tmp_path / "venv") and folder == package / "conf"
    assert config_path == "pkg://ssl_bench.conf"  # neither the checkout's conf/ nor the copy's

    _run([bin_dir / "ssl-bench", "profile=smoke", "data=synthetic", "progress=false"], work)
    table = pd.read_csv(work / "runs" / "leaderboard.csv")
    assert set(table.task) == {"rotation"}
    assert sorted(table[table.protocol == "conv3_linear"].labels_per_class) == [5, 20]
    assert set(table.git_sha) == {"unknown"}  # an installed copy has no commit
    (run_dir,) = (work / "runs" / "rotation").iterdir()
    assert _main_config_source(run_dir) == ("pkg", "ssl_bench.conf")


def test_the_wheel_holds_every_file_and_finds_its_configs(tmp_path):
    src, work = _sources(tmp_path), tmp_path / "work"
    work.mkdir()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", src,
          "-w", tmp_path / "dist"], tmp_path)
    (wheel,) = (tmp_path / "dist").glob("ssl_bench-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        scripts = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    code = {p.relative_to(src).as_posix() for p in (src / "ssl_bench").rglob("*.py")}
    configs = {"ssl_bench/" + p.relative_to(src).as_posix() for p in (src / "conf").rglob("*.yaml")}
    assert code <= names  # every module of every subpackage (pyproject.toml lists the packages)
    assert configs <= names and len(configs) > 30
    assert {"ssl_bench/conf/config.yaml", "ssl_bench/conf/task/rotation.yaml",
            "ssl_bench/conf/task/_base.yaml", "ssl_bench/conf/hydra/launcher/slurm.yaml"} <= names
    assert "ssl-bench-show = ssl_bench.show:main" in scripts

    bin_dir = _venv(tmp_path / "venv")
    _run([bin_dir / "python", "-m", "pip", "install", "--no-deps", wheel], tmp_path)
    package, config_path, _ = _where(bin_dir, work)
    assert package.is_relative_to(tmp_path / "venv") and config_path == "pkg://ssl_bench.conf"
    job = OmegaConf.create(_run([bin_dir / "ssl-bench", "task=jigsaw", "profile=smoke", "--cfg", "job"],
                                work))
    assert job.task.name == "jigsaw" and job.profile_name == "smoke" and job.task.train_lr == 0.1
    assert "pkg://ssl_bench.conf" in _run([bin_dir / "ssl-bench", "--info", "searchpath"], work)
    _run([bin_dir / "ssl-bench-show", "task=rotation", "data=synthetic", "data.num_train=100",
          "show.num_images=2"], work)
    assert (work / "runs" / "show" / "rotation.png").stat().st_size > 0
    # methods.py reads the task files as package resources; ssl-bench-perf uses the compose API
    out = _run([bin_dir / "python", "-c",
                "from ssl_bench.methods import pretrains\n"
                "from ssl_bench.perf.steps import compose_config\n"
                "print(pretrains('rotation'), pretrains('random'))\n"
                "print(compose_config(['task=jigsaw']).task.name)"],
               work)
    assert out.split() == ["True", "False", "jigsaw"]


def test_the_editable_install_uses_the_checkouts_conf_folder(tmp_path):
    src, work = _sources(tmp_path), tmp_path / "work"
    work.mkdir()
    bin_dir = _venv(tmp_path / "venv")
    _run([bin_dir / "python", "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", src],
         tmp_path)

    package, config_path, folder = _where(bin_dir, work)
    assert package == src / "ssl_bench" and config_path == str(src / "conf") and folder == src / "conf"
    job = OmegaConf.create(_run([bin_dir / "ssl-bench", "task=jigsaw", "--cfg", "job"], work))
    assert job.task.name == "jigsaw"
    # the package name resolves to the same folder (the package-dir mapping), as Hydra's pkg://
    out = _run([bin_dir / "python", "-c",
                "from importlib.resources import files\n"
                "from hydra import compose, initialize_config_module\n"
                "print(files('ssl_bench.conf'))\n"
                "with initialize_config_module('ssl_bench.conf', version_base='1.3'):\n"
                "    print(compose('config', overrides=['task=jigsaw']).task.name)"], work)
    assert out.split() == [str(src / "conf"), "jigsaw"]
