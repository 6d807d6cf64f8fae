"""`ssl-bench-show task=<name>`: a picture of what a task asks of the network.

The task's `examples` gives rows of (image, caption) panels — the rotated copies with their
angle, the shuffled tiles with the permutation, the patch pairs with their offset, the
masked images — and they are drawn into one PNG. Any task gets a picture through the task
interface, with no code here. `logger=tensorboard` adds the same picture (`examples_figure`)
to a run's TensorBoard events.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import torch
from omegaconf import DictConfig

from ssl_bench import configs
from ssl_bench.data import DataSplits, load_data
from ssl_bench.data.augment import to_float
from ssl_bench.errors import UserError, instantiate
from ssl_bench.interrupts import stop_cleanly
from ssl_bench.paths import normalize_paths
from ssl_bench.tasks import build_task

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)


def to_displayable(image: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """C×H×W normalised -> H×W×C in [0, 1]; inputs normalised per patch are min-max scaled."""
    x = image.detach().float().cpu() * std.view(-1, 1, 1) + mean.view(-1, 1, 1)
    if x.min() < -0.05 or x.max() > 1.05:  # not in pixel units (per-patch normalisation)
        x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-8)
    return x.clamp(0, 1).permute(1, 2, 0)


def draw_panels(rows: list[list[tuple[torch.Tensor, str]]], mean: torch.Tensor, std: torch.Tensor,
                title: str = "") -> Figure:
    """Rows of (image, caption) panels as a matplotlib figure (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.5 * ncols, 1.7 * len(rows)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, row in enumerate(rows):
        for c, (image, caption) in enumerate(row):
            axes[r][c].imshow(to_displayable(image, mean.cpu(), std.cpu()).numpy(),
                              interpolation="nearest")
            axes[r][c].set_title(caption, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Write `fig` as a PNG at `path` and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render_panels(rows: list[list[tuple[torch.Tensor, str]]], path: Path, mean: torch.Tensor,
                  std: torch.Tensor, title: str = "") -> Path:
    """Draw rows of (image, caption) panels into a PNG at `path`."""
    return save_figure(draw_panels(rows, mean, std, title), path)


def examples_figure(cfg: DictConfig, data: DataSplits) -> Figure:
    """The picture of the configured task: `cfg.show.num_images` training images of `data`
    (picked by `cfg.seed`) as the task's batch shows them. What `ssl-bench-show` writes and
    `logger=tensorboard` adds to a run; it draws nothing from the global random generators,
    so a run's results do not depend on whether it is drawn."""
    with torch.random.fork_rng(devices=[]):  # the backbone's and the task's initialisation
        task = build_task(cfg.task.module, instantiate(cfg.backbone), data)
    pick = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.seed))
    images = to_float(data.train.images[pick[:cfg.show.num_images]], data.mean, data.std)
    rows = task.examples(images, torch.Generator().manual_seed(cfg.seed))
    return draw_panels(rows, data.mean, data.std,
                       title=f"{cfg.task.name} on {cfg.data.name}: what the network sees")


def show(cfg: DictConfig) -> Path:
    """Render `cfg.show.num_images` examples of the configured task's batch."""
    normalize_paths(cfg)
    if not cfg.task.pretrain:
        raise UserError(f"task={cfg.task.name} has no pretext batches to show; pick a pretext task")
    data = load_data(cfg.data)
    path = Path(cfg.show.path or Path(cfg.paths.runs_dir) / "show" / f"{cfg.task.name}.png")
    return save_figure(examples_figure(cfg, data), path)


@hydra.main(version_base=configs.VERSION_BASE, config_path=configs.CONFIG_PATH, config_name="config")
def _app(cfg: DictConfig) -> None:
    try:
        path = show(cfg)
    except UserError as exc:
        print(f"ssl-bench-show: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {path}")


def main() -> None:
    # a picture needs no run folder of its own
    sys.argv += ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=none",
                 "hydra/hydra_logging=none"]
    with stop_cleanly("ssl-bench-show"):
        _app()


if __name__ == "__main__":
    main()
