"""Evaluate a backbone you bring: `ssl-bench-eval CHECKPOINT [overrides]` (`task=external`).

The checkpoint goes through the same protocol, probes and leaderboard as the suite's own
pretrainings; nothing is pretrained. Two kinds of network:

- **The suite's layout** (`task.model: null`): a `ConvBackbone` state dict, as every
  pretraining exports it (`backbone.safetensors`). The network is built from the
  description beside the file (`backbone.json`) or in its metadata; without one, from the
  configured `backbone=<name>`.
- **Any module** (`task.model: {_target_: ...}` plus `task.stages`): your network, built
  by Hydra, with the file's state dict loaded into it, and a map from its layers (names as
  in `named_modules`) to the protocol's stages, e.g. for a torchvision ResNet
  `{conv1: [conv1, bn1, relu, layer1], conv2: [layer2], conv3: [layer3]}`. Each stage runs
  its layers in the order given; the module's own `forward` is not used.

Before any work the file is read (safetensors, or `torch.load(weights_only=True)`), every
key and shape is checked against the network (one line names the first mismatch, with both
shapes), the stage map is checked against the module's layers, and a dummy batch is run
through the stages. Of a module's file only the mapped layers' keys are needed (a classifier
or a projector head in it is left out, with a log line). The run's identity holds a SHA-256
of the weights (every tensor's name, dtype, shape and bytes), not the file's path: the same
weights under the same task name (`ext-<file stem>` unless `--name` sets it) reuse their
rows from any folder or file format; changed weights never do.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from ssl_bench.backbone import STAGES
from ssl_bench.checkpoint import state_dict_misfit
from ssl_bench.errors import UserError, instantiate
from ssl_bench.export import WEIGHTS, load_into, read_description, read_state_dict, weights_path
from ssl_bench.paths import resolve_path

log = logging.getLogger(__name__)


def is_external(cfg: DictConfig) -> bool:
    """Whether `cfg` evaluates a checkpoint it was given (`task=external`)."""
    return cfg.task.get("checkpoint") is not None


def checkpoint_name(path: str) -> str:
    """The default `task.name` of a checkpoint: `ext-` and the file's stem, or its folder's
    name for an exported `backbone.safetensors` (that folder names the pretraining)."""
    file = Path(str(path))
    if file.is_dir():
        label = file.name
    elif file.name == WEIGHTS:
        label = file.parent.name
    else:
        label = file.stem
    return f"ext-{label or 'checkpoint'}"


@lru_cache(maxsize=32)
def _weights_sha256(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(read_state_dict(Path(path)).items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def content_hash(path: str | Path) -> str:
    """SHA-256 of the weights in the file: every tensor's name, dtype, shape and bytes.

    The tensors, not the file's bytes: the same weights exported again (whose metadata
    holds another git sha), or saved in the other format, are the same evaluation; one
    changed weight is not. Cached per path, size, inode and change times.
    """
    file = weights_path(path)
    stat = file.stat()
    return _weights_sha256(str(file), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


class MappedBackbone(nn.Module):
    """Any network seen as the protocol's three stages: `conv1`, `conv2`, `conv3`, each a
    `Sequential` of the network's own layers (shared, not copied), then global pooling."""

    def __init__(self, name: str, stages: Mapping[str, nn.Sequential], channels: Mapping[str, int]):
        super().__init__()
        self.name = name
        for stage in STAGES:
            setattr(self, stage, stages[stage])
        self._channels = dict(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)

    @property
    def stages(self) -> tuple[str, ...]:
        return STAGES

    def out_channels(self, stage: str | None = None) -> int:
        return self._channels[stage or "conv3"]

    def drop_pretext_stage(self) -> MappedBackbone:
        return self  # only the mapped stages exist

    def features(self, x: torch.Tensor, upto: str = "conv3") -> torch.Tensor:
        for stage in STAGES[:STAGES.index(upto) + 1]:
            x = getattr(self, stage)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


def _stage_layers(model: nn.Module, stages: Mapping[str, Sequence[str] | str], target: str
                  ) -> dict[str, nn.Sequential]:
    """The map's layers looked up in `model`; a name it lacks or a layer used twice is refused."""
    if set(stages) != set(STAGES):
        raise UserError(f"task.stages must map exactly {', '.join(STAGES)} to layers of {target}; it has "
                        f"{', '.join(map(str, stages)) or 'nothing'}")
    layers = dict(model.named_modules())
    top = [name for name, _ in model.named_children()]
    seen: dict[str, str] = {}
    out = {}
    for stage in STAGES:
        names = [stages[stage]] if isinstance(stages[stage], str) else list(stages[stage])
        if not names:
            raise UserError(f"task.stages.{stage} is empty: give at least one layer of {target}")
        for name in names:
            if name not in layers or not name:
                raise UserError(f"task.stages.{stage} names the layer {name!r}, which {target} does not "
                                f"have; its top-level layers are: {', '.join(top)}")
            inside = next((other for other in seen if name == other or name.startswith(f"{other}.")
                           or other.startswith(f"{name}.")), None)
            if inside is not None:
                raise UserError(f"task.stages.{stage} names the layer {name!r}, which overlaps {inside!r} "
                                f"of task.stages.{seen[inside]}: each layer belongs to one stage, once")
            seen[name] = stage
        out[stage] = nn.Sequential(*[layers[n] for n in names])
    return out


@torch.no_grad()
def _stage_channels(stages: Mapping[str, nn.Module], image_shape: tuple[int, int, int],
                    target: str) -> dict[str, int]:
    """Run a dummy batch through the stages (eval mode) and read each one's channels."""
    x = torch.zeros(2, *image_shape)
    channels = {}
    for stage in STAGES:
        module = stages[stage]
        was_training = module.training
        module.eval()
        try:
            x = module(x)
        except Exception as exc:  # noqa: BLE001 - any layer error means the map does not fit
            detail = " ".join(str(exc).split())[:200]
            raise UserError(f"the stage map does not fit {target}: running conv1 -> conv2 -> conv3 on a "
                            f"{'x'.join(map(str, (2, *image_shape)))} batch fails in {stage} "
                            f"({type(exc).__name__}: {detail})") from None
        finally:
            module.train(was_training)
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise UserError(f"the stage map does not fit {target}: {stage} gives {shape}, not an "
                            f"N x C x H x W feature map (the protocol pools and retrains conv3 on one)")
        channels[stage] = int(x.shape[1])
    return channels


def _mapped_backbone(cfg: DictConfig, weights: Path, image_shape: tuple[int, int, int]) -> MappedBackbone:
    """The user's module (`task.model`), its weights loaded and checked, seen through `task.stages`."""
    target = str(cfg.task.model.get("_target_", "task.model"))
    model = instantiate(cfg.task.model)
    if not isinstance(model, nn.Module):
        raise UserError(f"task.model builds a {type(model).__name__}, not a torch.nn.Module")
    stages = _stage_layers(model, OmegaConf.to_container(cfg.task.stages), target)
    _load_mapped_layers(model, OmegaConf.to_container(cfg.task.stages), read_state_dict(weights), weights,
                        target)
    name = target.rsplit(".", 1)[-1]
    return MappedBackbone(name, stages, _stage_channels(stages, image_shape, target))


def _load_mapped_layers(model: nn.Module, stages: Mapping[str, Sequence[str] | str],
                        state: Mapping[str, torch.Tensor], weights: Path, target: str) -> None:
    """Load the file's weights of the mapped layers into `model`, every one of their keys and
    shapes checked; the file's other keys (a classifier, a projector head) are not needed by
    the protocol and are left out, with a log line that says how many."""
    names = [n for layers in stages.values() for n in ([layers] if isinstance(layers, str) else layers)]
    prefixes = tuple(f"{n}." for n in names)
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}
    misfit = state_dict_misfit(expected, {k: v for k, v in state.items() if k.startswith(prefixes)})
    if misfit:
        raise UserError(f"the weights in {weights} do not fit the mapped layers of {target}: {misfit}")
    model.load_state_dict({k: state[k] for k in expected}, strict=False)
    left_out = sorted(k for k in state if not k.startswith(prefixes))
    if left_out:
        log.info("%d key(s) of %s are outside the mapped layers and not used (e.g. %s)", len(left_out),
                 weights, ", ".join(left_out[:3]))


def prepare(cfg: DictConfig) -> nn.Module:
    """The checkpoint of `cfg.task` as a loaded backbone, checked, before any other work.

    Sets `cfg.backbone` to what was built (the description's config, or the module's name
    and stage map), so rows and the run id name the network that was evaluated, and
    `cfg.task.checkpoint` to the weights file's absolute path.
    """
    weights = weights_path(resolve_path(cfg.task.checkpoint, "task.checkpoint"))
    image_shape = (3, int(cfg.data.get("image_size") or 32), int(cfg.data.get("image_size") or 32))
    with open_dict(cfg):
        cfg.task.checkpoint = str(weights)
        if cfg.task.get("model") is not None:
            backbone = _mapped_backbone(cfg, weights, image_shape)
            cfg.backbone = OmegaConf.create({"name": backbone.name, "model": cfg.task.model,
                                             "stages": cfg.task.stages})
            return backbone
        description = read_description(weights)
        if description is not None:
            cfg.backbone = OmegaConf.create(description["backbone"])
    backbone = instantiate(cfg.backbone)
    load_into(backbone, read_state_dict(weights), weights, f"backbone={cfg.backbone.name}"
              + ("" if description else " (no backbone.json beside the file: choose its backbone=...)"))
    return backbone


def _override_value(text: str) -> str:
    """`text` quoted for a Hydra override, whatever characters the path holds."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def main(argv: list[str] | None = None) -> None:
    """`ssl-bench-eval CHECKPOINT [--name NAME] [overrides]`: `ssl-bench task=external ...`."""
    parser = argparse.ArgumentParser(
        prog="ssl-bench-eval", usage="ssl-bench-eval CHECKPOINT [--name NAME] [ssl-bench overrides ...]",
        description="Evaluate a backbone checkpoint under the protocol; any "
        "other argument is an ssl-bench override (e.g. -m seed=0,1,2 data.root=...).")
    parser.add_argument("checkpoint", help=f"a {WEIGHTS} (or its folder), another .safetensors "
                        "file or a torch.save'd state dict")
    parser.add_argument("--name", help="the leaderboard's task name (default: ext-<file or folder name>)")
    args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        weights = weights_path(resolve_path(args.checkpoint, "the checkpoint"))
    except UserError as exc:
        parser.exit(2, f"ssl-bench-eval: error: {exc}\n")
    from ssl_bench import cli

    # the user's arguments first, in their order (Hydra's flags such as -m stay before the overrides)
    sys.argv = ["ssl-bench-eval", *overrides, "task=external",
                f"task.checkpoint={_override_value(str(weights))}",
                *([f"task.name={_override_value(args.name)}"] if args.name else [])]
    cli.main()


if __name__ == "__main__":
    main()
