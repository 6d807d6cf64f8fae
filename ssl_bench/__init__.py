"""ssl_bench: benchmark self-supervised pretext tasks by the few-label accuracy they give.

The pipeline is: pretrain a shared conv backbone on unlabeled images with a pretext task,
freeze its early stages (conv1, conv2), then fit conv3 + a linear classifier on K labelled
images per class and report top-1 accuracy on the full test set.

`ssl_bench.load_backbone(path)` gives a finished pretraining's backbone as a plain PyTorch
module (`backbone.safetensors` in its `runs/pretrain/<id>/` folder).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_backbone"]


def __getattr__(name: str) -> Any:
    # imported on first use: `import ssl_bench` (and its configs package) stays free of torch
    if name == "load_backbone":
        from ssl_bench.export import load_backbone

        return load_backbone
    raise AttributeError(f"module 'ssl_bench' has no attribute {name!r}")
