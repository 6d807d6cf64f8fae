"""Export the reference run's finished bf16 pretrainings as backbone.safetensors (item 8b on a
CPU without native bf16): evaluated as `task=external` in fp32, they keep their weights while
the evaluator's precision changes; a bf16 pretraining cannot be reused by an fp32 run otherwise
(the precision is part of the pretraining's identity)."""
import json
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ssl_bench.export import save_backbone

out = Path(sys.argv[1])
for folder in map(Path, sys.argv[2:]):
    cfg = OmegaConf.load(folder / "config.yaml")
    record = json.loads((folder / "pretrain.json").read_text())
    state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=False)
    epochs = record.get("result", record).get("epochs")
    assert int(state["epoch"]) == int(epochs), (folder, state["epoch"], epochs)
    backbone = instantiate(cfg.backbone)
    backbone.load_state_dict(state["backbone"])
    dest = out / cfg.task.name
    dest.mkdir(parents=True, exist_ok=True)
    path = save_backbone(dest, backbone, OmegaConf.to_container(cfg.backbone, resolve=True),
                         {"task": cfg.task.name, "pretrain_id": folder.name, "epochs": int(state["epoch"]),
                          "precision": cfg.get("precision")})
    print(folder.name, "->", path)
