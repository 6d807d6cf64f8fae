"""8a measurement (runs at commit 4084ea1, which had `phase_shifts` and `random_translate`;
the layouts it tested were replaced after it): held-out pretext accuracy of finished jigsaw / relative-position
pretrainings when the test images are translated before the patches are cut.

A fixed translation by 8 px keeps the JPEG block phase (8x8 grid); by 4 px it moves it by
half a block; "random" is the task's phase_shifts=8 (-4..3 px). If a model scores high on
plain and 8-px-shifted images but low on 4-px-shifted ones, it reads where the block edges
fall, not the image content. Usage: python runs/phase/phase_check.py runs/phase/pretrain/*
"""
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ssl_bench.data.augment import random_translate, to_float
from ssl_bench.data import load_data
from ssl_bench.run import build_backbone
from ssl_bench.train import heldout_indices, load_checkpoint


def shift(x: torch.Tensor, px: int) -> torch.Tensor:
    """Translate every image by px down and right, reflect-filled."""
    return F.pad(x, (px, 0, px, 0), mode="reflect")[..., : x.shape[-2], : x.shape[-1]]


@torch.no_grad()
def accuracy(backbone, task, x, gen_seed=2, phase_random=False):
    gen = torch.Generator().manual_seed(gen_seed)
    correct = 0
    for i in range(0, len(x), 250):
        xb = x[i:i + 250]
        if phase_random:
            xb = random_translate(xb, 8, gen)
        inputs, targets = task.make_batch(xb, gen)
        correct += (task(backbone, inputs).argmax(1) == targets).sum().item()
    return 100.0 * correct / len(x)


def main(folders):
    data = None
    for folder in map(Path, folders):
        ident = OmegaConf.load(folder / "config.yaml")
        if data is None:
            ident.data.cache_dir = ".cache/ssl_bench"
            data = load_data(ident.data)
        backbone = build_backbone(ident.backbone, 0)
        task = instantiate(ident.task.module, feature_dim=backbone.out_channels(),
                           image_shape=tuple(data.train.images.shape[1:]))
        task = task.bind_data(data.mean, data.std, data.num_classes)
        load_checkpoint(folder / "checkpoint.pt", backbone, task, torch.device("cpu"))
        backbone.eval(), task.eval()
        trained = task.phase_shifts
        task.phase_shifts = 0
        x = to_float(data.test.images[heldout_indices(data, 2000)], data.mean, data.std)
        row = {"task": ident.task.name, "trained_phase_shifts": trained,
               "plain": accuracy(backbone, task, x), "shift8_phase_kept": accuracy(backbone, task, shift(x, 8)),
               "shift4_phase_moved": accuracy(backbone, task, shift(x, 4)),
               "phase_random": accuracy(backbone, task, x, phase_random=True)}
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}))


if __name__ == "__main__":
    main(sys.argv[1:])
