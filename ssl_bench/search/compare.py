"""The benchmark entry: the searched backbone against the hand-designed one, same budget.

After a search, the derived network is built with its widths scaled to the parameter
count of the configured (hand-designed) backbone, pretrained with the same pretext task
and evaluated under the standard protocol by `ssl_bench.run.run`; then the hand-designed
backbone goes through the same run. Both land as ordinary rows in the same leaderboard (a
hand-designed run that already exists there is not recomputed), and a small table puts
them side by side per K.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict

from ssl_bench.leaderboard import read as read_leaderboard
from ssl_bench.run import backbone_name, build_backbone, eval_data_config, run
from ssl_bench.runlog import atomic_write_bytes, atomic_write_json
from ssl_bench.search.genotype import Genotype
from ssl_bench.search.model import count_parameters
from ssl_bench.search.search import SearchOutcome
from ssl_bench.stats import summarize

log = logging.getLogger(__name__)


def with_derived_backbone(cfg: DictConfig, genotype_path: Path, param_budget: int | None) -> DictConfig:
    """A copy of `cfg` whose backbone is `cfg.derived.backbone` built from `genotype_path`."""
    derived = OmegaConf.to_container(cfg.derived.backbone, resolve=True)
    derived["genotype"] = str(genotype_path)  # type: ignore[index]
    if param_budget:
        derived["param_budget"] = int(param_budget)  # type: ignore[index]
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.backbone = OmegaConf.create(derived)
    return out


def comparison_table(table: pd.DataFrame, task: str, dataset: str, profile: str,
                     backbones: dict[str, int], protocol: str = "conv3_linear") -> str:
    """Markdown: per K, mean ± std (seeds) of each backbone in `backbones` (name -> params)."""
    rows = table[(table.task == task) & (table.dataset == dataset) & (table.profile == profile)
                 & (table.protocol == protocol) & table.backbone.isin(list(backbones))]
    summary = summarize(rows)  # the leaderboard's own statistics (check rows left out)
    if summary.empty:
        return f"(no {protocol} rows for task {task} yet)\n"
    stats = summary.set_index(["labels_per_class", "backbone"])[["mean", "std", "n"]]
    names = list(backbones)
    head = "| K | " + " | ".join(f"{b} ({backbones[b]:,} params)" for b in names) + " | Δ |"
    lines = [f"{task} on {dataset}, protocol {protocol}, profile {profile}: test accuracy %, "
             "mean ± std (seeds)", "", head, "|---:|" + "---:|" * (len(names) + 1)]
    for k in sorted(summary.labels_per_class.unique()):
        cells, means = [], []
        for b in names:
            if (k, b) in stats.index:
                m, s, n = stats.loc[(k, b)]
                cells.append(f"{m:.2f} ± {0.0 if math.isnan(s) else s:.2f} ({int(n)})")
                means.append(m)
            else:
                cells.append("–")
                means.append(math.nan)
        delta = means[-1] - means[0] if len(means) > 1 else math.nan
        lines.append(f"| {int(k)} | " + " | ".join(cells) + f" | {delta:+.2f} |")
    return "\n".join(lines) + "\n"


def compare(cfg: DictConfig, outcome: SearchOutcome, job_dir: Path) -> dict:
    """Pretrain + evaluate the derived backbone and the hand-designed one; write the comparison.

    Writes `comparison.json` and `comparison.md` into `job_dir` (the runs themselves in
    `job_dir/searched` and `job_dir/reference`) and the table over every seed so far to
    `<runs_dir>/search_comparison_<task>.md`.
    """
    seed = int(cfg.seed)
    reference_params = count_parameters(build_backbone(cfg.backbone, seed))
    budget = reference_params if cfg.derived.match_budget else None
    searched_cfg = with_derived_backbone(cfg, outcome.genotype_path, budget)
    searched_params = count_parameters(build_backbone(searched_cfg.backbone, seed))
    log.info("parameters: hand-designed %s %d, searched %s %d (%+.1f%%)", cfg.backbone.name,
             reference_params, searched_cfg.backbone.name, searched_params,
             100.0 * (searched_params / reference_params - 1))
    searched_rows = run(searched_cfg, job_dir / "searched")
    reference_rows = run(cfg, job_dir / "reference")

    names = {backbone_name(cfg): reference_params, backbone_name(searched_cfg): searched_params}
    if len(names) < 2:
        log.warning("the searched and the hand-designed backbone are both labelled %s; rename one "
                    "(derived.backbone.name=...) to tell their rows apart", backbone_name(cfg))
    dataset = str(eval_data_config(cfg).name)
    table = read_leaderboard(Path(cfg.leaderboard.path))
    markdown = comparison_table(table, str(cfg.task.name), dataset, str(cfg.profile_name), names)
    genotype = Genotype.from_dict(outcome.result.genotype)
    summary = {
        "task": cfg.task.name, "seed": seed, "genotype": outcome.result.genotype,
        "genotype_path": str(outcome.genotype_path), "search_dir": str(outcome.folder),
        "search_seconds": outcome.result.seconds, "search_reused": outcome.reused,
        "parameters": {"reference": reference_params, "searched": searched_params,
                       "search_network": outcome.result.search_parameters},
        "searched_backbone": OmegaConf.to_container(searched_cfg.backbone, resolve=True),
        "reference_backbone": OmegaConf.to_container(cfg.backbone, resolve=True),
        "rows": {"searched": searched_rows, "reference": reference_rows},
    }
    atomic_write_json(job_dir / "comparison.json", summary)
    text = (f"# Searched vs hand-designed backbone ({cfg.task.name}, seed {seed})\n\n"
            f"Genotype `{outcome.genotype_path}` (search: {outcome.result.seconds:.0f}s):\n\n"
            f"```\n{genotype.describe()}\n```\n\n{markdown}")
    atomic_write_bytes(job_dir / "comparison.md", text.encode())
    atomic_write_bytes(Path(cfg.paths.runs_dir) / f"search_comparison_{cfg.task.name}.md", markdown.encode())
    print(markdown)
    return summary
