"""The shared conv backbone: three named stages, conv1 -> conv2 -> conv3, then global pooling.

Each stage is a stack of conv-BN-ReLU layers optionally followed by a 3×3/stride-2 pool
(RotNet's NIN pools after blocks 1 and 2: 32 px -> 16 -> 8). The evaluator freezes conv1
and conv2 and retrains conv3, so the stage boundaries are the unit of the protocol.
Global average pooling at the end makes any input of 16 px or more work (jigsaw tiles,
patches).

An optional fourth stage (`conv4`, RotNet's 4-block pretraining network) sits above conv3
during pretraining only: the pretext head reads it, so conv3 is no longer the last layer
and conv2 is pushed less towards the pretext task's own specifics. The evaluator never
sees it (it re-initialises conv3 on top of the frozen conv2), and the supervised baseline
drops it, so every method is judged on the same conv1-conv3 architecture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import torch
from torch import nn

from ssl_bench.errors import ConfigError

STAGES = ("conv1", "conv2", "conv3")  # the evaluated stages
PRETEXT_STAGE = "conv4"  # optional, used only while pretraining


@dataclass(frozen=True)
class StageSpec:
    """Channels and kernel size of each conv in a stage, and the pool that ends it."""

    channels: Sequence[int]
    kernels: Sequence[int]
    pool: str | None = None  # "max", "avg" or None

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.kernels) or not self.channels:
            raise ConfigError("a stage needs as many kernels as channels, and at least one conv")
        if self.pool not in (None, "max", "avg"):
            raise ConfigError(f"pool must be 'max', 'avg' or null, got {self.pool!r}")


def build_stage(in_channels: int, spec: StageSpec) -> nn.Sequential:
    layers: list[nn.Module] = []
    for out, k in zip(spec.channels, spec.kernels):
        layers += [nn.Conv2d(in_channels, out, k, padding=k // 2, bias=False),
                   nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        in_channels = out
    if spec.pool == "max":
        layers.append(nn.MaxPool2d(3, stride=2, padding=1))
    elif spec.pool == "avg":
        layers.append(nn.AvgPool2d(3, stride=2, padding=1))
    return nn.Sequential(*layers)


def reset_parameters(module: nn.Module) -> None:
    """Re-initialise every layer of `module` in place (weights and BatchNorm statistics)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
        if hasattr(m, "reset_parameters") and m is not module:
            m.reset_parameters()


class ConvBackbone(nn.Module):
    """conv1 -> conv2 -> conv3 -> global average pool; `features(x, upto)` stops early."""

    def __init__(self, name: str, conv1: dict, conv2: dict, conv3: dict,
                 conv4: dict | None = None, in_channels: int = 3):
        super().__init__()
        self.name = name
        specs = (conv1, conv2, conv3) + ((conv4,) if conv4 else ())
        self.specs = {s: StageSpec(**spec) for s, spec in zip(STAGES + (PRETEXT_STAGE,), specs)}
        channels = in_channels
        for stage in self.specs:
            setattr(self, stage, build_stage(channels, self.specs[stage]))
            channels = self.specs[stage].channels[-1]
        self.pool = nn.AdaptiveAvgPool2d(1)

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages in order: conv1-conv3, plus conv4 while a pretext stage is attached."""
        return tuple(self.specs)

    @property
    def last_stage(self) -> str:
        return self.stages[-1]

    def out_channels(self, stage: str | None = None) -> int:
        """Channels of `stage` (default: the last one, which `forward` pools)."""
        return self.specs[stage or self.last_stage].channels[-1]

    def drop_pretext_stage(self) -> ConvBackbone:
        """Remove conv4 (if any) in place, so the network is the evaluated conv1-conv3."""
        if PRETEXT_STAGE in self.specs:
            del self.specs[PRETEXT_STAGE]
            delattr(self, PRETEXT_STAGE)
        return self

    def features(self, x: torch.Tensor, upto: str = "conv3") -> torch.Tensor:
        """Feature map after stage `upto` (N×C×h×w), e.g. N×64×8×8 after conv2 on 32 px."""
        if upto not in self.specs:
            raise ValueError(f"upto must be one of {self.stages}, got {upto!r}")
        for stage in self.stages:
            x = getattr(self, stage)(x)
            if stage == upto:
                return x
        raise AssertionError("unreachable")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of the last stage (conv3, or conv4 when attached), N×D."""
        return self.pool(self.features(x, self.last_stage)).flatten(1)


def frozen_stages(backbone: ConvBackbone, upto: str = "conv2") -> nn.Sequential:
    """The stages up to `upto` as one module, put in eval mode with gradients off."""
    stages = nn.Sequential(*[getattr(backbone, s) for s in STAGES[:STAGES.index(upto) + 1]])
    stages.eval()
    for p in stages.parameters():
        p.requires_grad_(False)
    return stages


# Not in a label: the builder, and a searched backbone's genotype file, which each search
# seed makes anew (like a pretraining's weights), so that a method's seeds share one cell.
UNLABELLED = ("name", "_target_", "genotype")


def backbone_label(config: Mapping[str, Any], preset: Mapping[str, Any] | None) -> str:
    """What the leaderboard's `backbone` column calls `config`: the preset's name when the
    config is the preset (`conf/backbone/<name>.yaml`), else the name and what differs.

    The report averages the rows of one (method, backbone) cell, so two architectures must
    never share a label: `backbone=small2 backbone.conv4=...` is `small2[conv4=128/3]`, not
    `small2`. A stage reads channels/kernels[/pool], lists joined by "-"; a path, its file
    name. A name with no preset file (the user's own config) is taken as given.
    """
    name = str(config.get("name"))
    if preset is None:
        return name
    keys = [k for k in config if k not in UNLABELLED]
    keys += [k for k in preset if k not in config and k not in UNLABELLED]
    changed = [k for k in keys if config.get(k) != preset.get(k)]
    if not changed:
        return name
    return f"{name}[{','.join(f'{k}={_describe(config.get(k))}' for k in changed)}]"


def _describe(value: Any) -> str:
    """One setting of a backbone config, short: a stage as channels/kernels[/pool]."""
    if value is None:
        return "none"
    if isinstance(value, Mapping) and "channels" in value:
        parts = [_describe(value.get("channels")), _describe(value.get("kernels"))]
        return "/".join(parts + ([str(value["pool"])] if value.get("pool") else []))
    if isinstance(value, (list, tuple)):
        return "-".join(_describe(v) for v in value)
    if isinstance(value, str) and ("/" in value or "\\" in value):
        return PurePath(value).name
    return str(value)
