import json

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from ssl_bench.errors import NonFiniteLossError
from ssl_bench.tasks import DataFacts
from ssl_bench.tasks.rotation import RotationTask
from ssl_bench.train import pretrain


def _setup(make_cfg, *overrides):
    cfg = make_cfg("profile=smoke", "data=synthetic", *overrides)
    net = instantiate(cfg.backbone)
    task = RotationTask(net.out_channels(), (3, 32, 32))
    task.build(net, DataFacts((3, 32, 32), torch.zeros(3), torch.ones(3)))
    return cfg, net, task


def test_pretraining_writes_metrics_and_checkpoint(make_cfg, tiny_data, tmp_path):
    cfg, net, task = _setup(make_cfg, "train.epochs=3", "train.steps_per_epoch=2")
    result = pretrain(net, task, tiny_data, cfg.train, tmp_path, torch.device("cpu"), seed=0,
                      progress=False)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [x for x in lines if "epoch" in x]
    assert [x["epoch"] for x in epochs] == [1, 2, 3]
    assert all({"loss", "train_accuracy", "lr", "epoch_seconds"} <= x.keys() for x in epochs)
    assert "test_accuracy" in lines[-1]
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["step"] == 6
    assert torch.equal(ckpt["backbone"]["conv1.0.weight"], net.conv1[0].weight)
    assert result.steps == 6 and 0.0 <= result.pretext_metric <= 100.0


def test_non_finite_loss_stops_with_a_clear_error(make_cfg, tiny_data, tmp_path):
    cfg, net, task = _setup(make_cfg, "train.optimizer.lr=1e30")
    with open_dict(cfg):
        cfg.train.optimizer.weight_decay = 0.0
    with torch.no_grad():
        task.head.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"step 1 .*lower train.optimizer.lr"):
        pretrain(net, task, tiny_data, cfg.train, tmp_path, torch.device("cpu"), 0,
                 progress=False)
