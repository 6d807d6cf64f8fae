"""The pretrained weights outside the suite: `backbone.safetensors` + `backbone.json`.

Every finished pretraining writes, beside its resumable `checkpoint.pt` (a dict private to
this code), the backbone's plain state dict as a safetensors file and a small JSON that
says how to build the network (the resolved backbone config with its `_target_`) and where
the weights came from (task, pretraining folder, held-out pretext metric). The same JSON
rides in the safetensors metadata, so the weights file alone is enough.

`load_backbone(path)` turns either back into a ready `nn.Module` in plain PyTorch: build the
network from the config, check the file's keys and shapes against it (one line naming the
first mismatch), load, eval mode. No pickle is read anywhere (safetensors holds tensors
only), and a description may only name the suite's own backbone builders (`BUILDERS`): a
weights file from a stranger cannot run code. A searched backbone's genotype file is
copied beside the export and named relative to it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save

from ssl_bench.checkpoint import state_dict_misfit
from ssl_bench.errors import UserError, instantiate
from ssl_bench.runlog import atomic_write_bytes, atomic_write_json

WEIGHTS = "backbone.safetensors"
CONFIG = "backbone.json"
FORMAT = "ssl_bench.backbone/1"
METADATA_KEY = "ssl_bench"
# the only `_target_`s a description may name: it is read from files anyone can write, and
# Hydra would call whatever it names
BUILDERS = ("ssl_bench.backbone.ConvBackbone", "ssl_bench.search.model.searched_backbone")


def plain_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`module`'s state dict as contiguous CPU tensors (safetensors stores no strides, and
    channels-last weights are not contiguous)."""
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_backbone(folder: Path, backbone: torch.nn.Module, backbone_cfg: Mapping[str, Any],
                  about: Mapping[str, Any]) -> Path:
    """Write `folder/backbone.safetensors` and `folder/backbone.json` (atomically); returns
    the weights file. `backbone_cfg`: the resolved backbone config (with `_target_`);
    `about`: where the weights came from, for people (not read back). A genotype file the
    config names (a searched backbone) is copied beside the weights and named by file name."""
    config = dict(backbone_cfg)
    if config.get("genotype"):
        genotype = Path(str(config["genotype"]))
        atomic_write_bytes(folder / genotype.name, genotype.read_bytes())
        config["genotype"] = genotype.name  # resolved against the weights' folder on load
    description = {"format": FORMAT, "backbone": config, **about}
    blob = save(plain_state(backbone), metadata={METADATA_KEY: json.dumps(description, default=str)})
    atomic_write_bytes(folder / WEIGHTS, blob)
    atomic_write_json(folder / CONFIG, description)
    return folder / WEIGHTS


def weights_path(path: str | Path) -> Path:
    """The weights file `path` names: the file itself, or `backbone.safetensors` in a folder."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS
    if not path.is_file():
        raise UserError(f"no backbone weights at {path}: give a {WEIGHTS} file (every finished "
                        f"pretraining writes one in its runs/pretrain/<id>/ folder) or its folder")
    return path


def read_description(weights: Path) -> dict[str, Any] | None:
    """The backbone description of a weights file: the JSON beside it (`backbone.json`, or
    `<stem>.json` when it is one of ours: other JSON files there are the user's own), else
    the file's own metadata; None when neither exists (a file from elsewhere)."""
    sidecar = weights.with_name(CONFIG) if weights.name == WEIGHTS else weights.with_suffix(".json")
    text = None
    if sidecar.is_file() and (weights.name == WEIGHTS or f'"{FORMAT}"' in sidecar.read_text()):
        text = sidecar.read_text()
    elif weights.suffix == ".safetensors":
        try:
            with safe_open(str(weights), framework="pt") as handle:
                text = (handle.metadata() or {}).get(METADATA_KEY)
        except (SafetensorError, OSError) as exc:
            raise UserError(f"{weights} is not a readable safetensors file ({exc})") from None
    if text is None:
        return None
    try:
        description = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"the backbone description of {weights} is not valid JSON ({exc})") from None
    ours = isinstance(description, dict) and description.get("format") == FORMAT
    config = description.get("backbone") if ours else None
    if not isinstance(config, dict):
        raise UserError(f"the backbone description of {weights} is not one of ssl_bench's ({FORMAT}); "
                        f"remove it, or evaluate the file with ssl-bench-eval and backbone=<name>")
    if config.get("_target_") not in BUILDERS:
        raise UserError(f"the backbone description of {weights} names _target_="
                        f"{config.get('_target_')!r}; only ssl_bench's backbones ({', '.join(BUILDERS)}) "
                        f"are built from a description (it could name any function)")
    if config.get("genotype") and not Path(str(config["genotype"])).is_absolute():
        config["genotype"] = str(weights.parent / str(config["genotype"]))
    return description


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file or a `torch.save`d one (read with
    `weights_only=True`: tensors and containers, never code). A saved dict that wraps the
    weights under one of `state_dict`, `model` or `backbone` (training checkpoints often
    do, ours too) is unwrapped."""
    try:
        if path.suffix == ".safetensors":
            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torn files, pickles with code, foreign formats: many kinds
        detail = " ".join(str(exc).split())[:200]
        raise UserError(f"cannot read weights from {path} ({type(exc).__name__}: {detail}); give a "
                        f"safetensors file or a torch.save'd state dict") from None
    if isinstance(state, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        for key in ("state_dict", "model", "backbone"):
            inner = state.get(key)
            if isinstance(inner, Mapping) and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        raise UserError(f"{path} holds a dict of {sorted(map(str, state))[:5]}, not a state dict (tensors "
                        f"by parameter name), nor one under 'state_dict', 'model' or 'backbone'")
    if not isinstance(state, Mapping):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict")
    return dict(state)


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: Path, what: str) -> None:
    """Load `state` into `module` after checking every key and shape (one line on a misfit)."""
    misfit = state_dict_misfit(module.state_dict(), state)
    if misfit:
        raise UserError(f"the weights in {source} do not fit {what}: {misfit}")
    module.load_state_dict(state)


def load_backbone(path: str | Path, pretext_stage: bool = False) -> torch.nn.Module:
    """The backbone saved at `path` (a `backbone.safetensors` or its folder), ready to use.

    The network is built from the saved config and holds exactly the saved weights, in eval
    mode on the CPU. `pretext_stage=False` drops a pretext-only stage above conv3 (conv4)
    after loading: the network the protocol evaluates.
    """
    weights = weights_path(path)
    description = read_description(weights)
    if description is None:
        raise UserError(f"{weights} says nothing about its network (no {CONFIG} beside it, no "
                        f"ssl_bench metadata); evaluate it with ssl-bench-eval and backbone=<name>")
    backbone = instantiate(description["backbone"])
    load_into(backbone, read_state_dict(weights), weights, f"the {description['backbone'].get('name')} "
                                                          f"backbone it describes")
    if not pretext_stage and hasattr(backbone, "drop_pretext_stage"):
        backbone.drop_pretext_stage()
    return backbone.eval()
