"""`ssl-bench-search`: a DARTS search driven by a pretext task (a Hydra app, `conf/search.yaml`).

Examples:
    ssl-bench-search task=rotation                        # CPU-sized search on CIFAR-10
    ssl-bench-search task=jigsaw search=gpu               # DARTS's schedule, for a GPU
    ssl-bench-search task=rotation derived.evaluate=true  # + pretrain, evaluate, compare
    ssl-bench-search --config-name search_benchmark       # the benchmark entry (multirun)

The job folder gets the resolved config and `meta.json`; the search itself lives in its
cache folder (`<runs_dir>/search/...`), and its genotype file is printed at the end with
the command that pretrains and evaluates the network it describes.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ssl_bench import configs
from ssl_bench.cli import clear_errors
from ssl_bench.device import resolve_device
from ssl_bench.interrupts import stop_cleanly
from ssl_bench.paths import normalize_paths
from ssl_bench.runlog import atomic_write_bytes, atomic_write_json, git_sha, now_iso
from ssl_bench.schema import validate
from ssl_bench.search.compare import compare
from ssl_bench.search.search import searched

log = logging.getLogger("ssl_bench")


def search_job(cfg: DictConfig, job_dir: Path) -> dict:
    """One search job: search (or reuse), then optionally the comparison; returns meta."""
    validate(cfg)  # the CLI checked it already; callers of the API get the same check
    normalize_paths(cfg)
    started_at, t0 = now_iso(), time.perf_counter()
    job_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    seed = int(cfg.seed)
    torch.manual_seed(seed)
    meta = {"git_sha": git_sha(), "seed": seed, "device": str(device), "torch": torch.__version__,
            "python": platform.python_version(), "host": platform.node(), "started_at": started_at}
    atomic_write_bytes(job_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())
    atomic_write_json(job_dir / "meta.json", meta)
    log.info("search job  git %s  device %s  seed %d\n%s", meta["git_sha"], device, seed,
             OmegaConf.to_yaml(cfg, resolve=True))

    outcome = searched(cfg, device)
    result = outcome.result
    meta.update(search_dir=str(outcome.folder), genotype_path=result.genotype_path,
                search_seconds=result.seconds, search_reused=outcome.reused)
    print(f"ssl-bench-search: genotype {result.genotype_path} "
          f"({'reused' if outcome.reused else f'searched in {result.seconds:.0f}s'})\n"
          f"  pretrain and evaluate it: ssl-bench task={cfg.task.name} backbone=searched "
          f"backbone.genotype={result.genotype_path}")
    if cfg.derived.evaluate:
        summary = compare(cfg, outcome, job_dir)
        meta.update(parameters=summary["parameters"])
    meta.update(finished_at=now_iso(), total_seconds=time.perf_counter() - t0)
    atomic_write_json(job_dir / "meta.json", meta)
    return meta


@hydra.main(version_base=configs.VERSION_BASE, config_path=configs.CONFIG_PATH, config_name="search")
def _app(cfg: DictConfig) -> None:
    with clear_errors("finished search epochs and searches"):
        search_job(cfg, Path(HydraConfig.get().runtime.output_dir))


def main() -> None:
    git_sha()  # pin the commit of the code this process imported, before any job runs
    with stop_cleanly("ssl-bench-search"):
        _app()


if __name__ == "__main__":
    main()
