"""The pretext-task interface.

A task turns a batch of unlabeled (already augmented, normalised) images into network
inputs and pseudo-labels with batched tensor operations, and owns everything specific to
it: its head, its loss and its pretext metrics. The backbone is passed in, never owned, so
one backbone can serve several tasks and the evaluator sees only the backbone.

Adding a task = one file here with a subclass + one `conf/task/<name>.yaml` whose
`module._target_` names the class. Tasks are made by `ssl_bench.tasks.build_task` only:
`__init__` takes the config's settings, `build` creates whatever depends on the backbone or
the data set, and after it the task's parameter set does not change. A task can also live
outside the repository, found through `hydra.searchpath` (examples/user_task/, README
"Your own task outside the repository").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.backbone import ConvBackbone

# One panel of a picture of a task's batch: an image (C×H×W, normalised) and its caption.
Panel = tuple[torch.Tensor, str]


@dataclass(frozen=True)
class DataFacts:
    """What a task may know about its data set: image shape, pixel statistics, classes."""

    image_shape: tuple[int, int, int]
    mean: torch.Tensor  # per channel, in [0, 1] units, of the unlabeled images
    std: torch.Tensor
    num_classes: int | None = None  # read only by tasks that need labels

    @classmethod
    def of(cls, data: Any) -> DataFacts:
        """The facts of a `DataSplits`."""
        return cls(tuple(data.train.images.shape[1:]), data.mean, data.std, data.num_classes)


@dataclass
class Phase:
    """A stretch of pretraining: which modules are trained (train mode, optimised).

    Everything else stays in eval mode with its parameters out of the optimiser, so it is
    bit-identical before and after the phase. Most tasks have one phase that trains the
    backbone and the task's own modules; greedy layer-wise pretraining has one per stage.
    """

    name: str
    modules: list[nn.Module] = field(default_factory=list)


class PretextTask(nn.Module, ABC):
    """Base class: classification-style pretext tasks get loss and accuracy for free."""

    metric_name = "accuracy"  # the primary metric: logged, and the leaderboard's pretext_metric
    higher_is_better = True
    needs_labels = False  # True only for the supervised upper bound: pretrain on labelled images

    def __init__(self, feature_dim: int, image_shape: tuple[int, int, int]):
        super().__init__()
        self.feature_dim = feature_dim
        self.image_shape = tuple(image_shape)
        channels = image_shape[0]
        self.built = False  # set by build(): until then the parameter set is incomplete
        # the data set's pixel statistics, for tasks that measure errors in pixel units
        self.register_buffer("pixel_mean", torch.zeros(channels), persistent=False)
        self.register_buffer("pixel_std", torch.ones(channels), persistent=False)

    def build(self, backbone: ConvBackbone, data: DataFacts) -> None:
        """Create what depends on the backbone or the data set (called once, by `build_task`).

        The base class records the data set's pixel statistics; a task with a head sized by
        the classes or modules shaped by the backbone's stages creates them here, so every
        parameter exists before a checkpoint is saved or loaded.
        """
        self.pixel_mean.copy_(data.mean)
        self.pixel_std.copy_(data.std)
        self.built = True

    def phases(self, backbone: ConvBackbone) -> list[Phase]:
        """The pretraining phases, in order; by default one that trains everything."""
        return [Phase("all", [backbone, self])]

    def set_phase(self, phase: Phase) -> None:
        """Called as each phase starts (tasks whose behaviour changes per phase override it)."""

    @abstractmethod
    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) from N×C×H×W float images, on the images' device.

        `labels` are given only to tasks with `needs_labels`; pretext tasks ignore them.
        """

    def per_sample_labels(self) -> Callable[[torch.Tensor], tuple[torch.Tensor, Any]]:
        """The conventional per-sample equivalent of `make_batch`: one normalised C×H×W
        image in, its network inputs and pseudo-label out (what a DataLoader worker would
        compute), with this task's settings. `ssl-bench-perf` times it against the batched
        path, so a new task brings its own; one without it is not measured there."""
        raise NotImplementedError(f"{type(self).__name__} has no per-sample reference pipeline")

    @abstractmethod
    def forward(self, backbone: ConvBackbone, inputs: torch.Tensor) -> torch.Tensor:
        """The task's prediction for `inputs`, using the backbone and the task's head."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    @torch.no_grad()
    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Pretext metrics of a batch; `metric_name` is the primary one (accuracy, percent)."""
        return {"accuracy": (outputs.argmax(1) == targets).float().mean().item() * 100.0}

    @property
    def chance_level(self) -> float | None:
        """The primary metric a network that only guesses gets (percent), against which a
        pretraining that learnt nothing is recognised (`ssl_bench.chance`); None when the
        metric has no such level (a loss). Classification tasks return 100 / their classes.
        """
        return None

    def held_out_variants(self) -> dict[str, dict[str, Any]]:
        """Extra settings under which the held-out pretext metrics are also measured, by name
        (attribute -> value, set only for that measurement): shortcut checks, e.g. whether a
        patch task still solves its puzzle once the JPEG block grid's phase is random."""
        return {}

    def examples(self, images: torch.Tensor, generator: torch.Generator) -> list[list[Panel]]:
        """Rows of panels showing what the network sees for a few images (`ssl-bench-show`).

        The default shows each model input with its target; tasks with structured inputs
        (tiles, patch pairs, masks) override it.
        """
        inputs, targets = self.make_batch(images, generator)
        n = len(images)
        per_image = len(inputs) // n
        return [[(inputs[j * n + i], f"target {int(targets[j * n + i])}") for j in range(per_image)]
                for i in range(n)]

    def on_pretrain_end(self, backbone: ConvBackbone, images: torch.Tensor, run_dir: Path) -> None:
        """Write task artefacts into the run folder (e.g. a permutation set, sample pictures)."""
