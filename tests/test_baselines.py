"""Supervised baseline, supervised upper bound, multi-task and greedy layer-wise pretraining."""

import json

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import ssl_bench.evaluate as evaluate_module
from ssl_bench.backbone import ConvBackbone
from ssl_bench.data.subsets import balanced_subset
from ssl_bench.evaluate import evaluate_scratch
from ssl_bench.run import build_backbone
from ssl_bench.tasks import build_task
from ssl_bench.tasks.multitask import MultiTask
from ssl_bench.train import pretrain

CPU = torch.device("cpu")


def _tiny_backbone():
    torch.manual_seed(0)
    return ConvBackbone("tiny", {"channels": [8], "kernels": [3], "pool": "max"},
                        {"channels": [8], "kernels": [3], "pool": "max"},
                        {"channels": [8], "kernels": [3], "pool": None})


def test_supervised_trains_only_on_the_k_subset_and_tests_on_the_test_set(make_cfg, tiny_data,
                                                                         monkeypatch):
    cfg = make_cfg("profile=smoke", "data=synthetic", "task=supervised", "eval.min_steps=3",
                   "eval.max_steps=3", "eval.labels_per_class=[4,7]")
    seen = []
    real_train, real_accuracy = evaluate_module.train_classifier, evaluate_module.accuracy

    def spy_train(model, batch_inputs, labels, steps, *args, **kwargs):
        seen.append({"images": batch_inputs.__defaults__[0].clone(), "labels": labels.clone(),
                     "steps": steps})
        return real_train(model, batch_inputs, labels, steps, *args, **kwargs)

    tested = []

    def spy_accuracy(predict, inputs, labels, chunk, model):
        tested.append(inputs)
        return real_accuracy(predict, inputs, labels, chunk, model)

    monkeypatch.setattr(evaluate_module, "train_classifier", spy_train)
    monkeypatch.setattr(evaluate_module, "accuracy", spy_accuracy)
    results = evaluate_scratch(lambda s: build_backbone(cfg.backbone, s), tiny_data, cfg.eval,
                               seed=2, device=CPU, progress=False)
    assert [r["labels_per_class"] for r in results] == [4, 7]
    for k, record in zip([4, 7], seen):
        subset = balanced_subset(tiny_data.train.labels, k, 2)
        assert torch.equal(record["images"], tiny_data.train.images[subset])
        assert torch.equal(record["labels"], tiny_data.train.labels[subset])
        assert record["steps"] == 3  # the same step budget for every K
    assert all(torch.equal(t, tiny_data.test.images) for t in tested) and len(tested) == 2


def test_multitask_heads_get_only_their_own_gradients(tiny_data):
    catalog = OmegaConf.create({
        "rotation": {"module": {"_target_": "ssl_bench.tasks.rotation.RotationTask"}},
        "relative_position": {"module": {
            "_target_": "ssl_bench.tasks.relative_position.RelativePositionTask"}}})
    net = _tiny_backbone()
    task = MultiTask(8, (3, 32, 32), ["rotation", "relative_position"], [0.5, 2.0], catalog)
    x = (tiny_data.train.images[:8].float() / 255 - 0.5) / 0.25
    inputs, targets = task.make_batch(x, torch.Generator().manual_seed(0))

    def grads(loss_fn):
        net.zero_grad()
        task.zero_grad()
        loss_fn(task(net, inputs)).backward()
        return ({n: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                 for n, p in task.named_parameters()},
                {n: p.grad.clone() for n, p in net.named_parameters()})

    total_heads, total_trunk = grads(lambda out: task.loss(out, targets))
    member = {m: grads(lambda out, m=m: task.tasks[m].loss(out[m], targets[m]))
              for m in ("rotation", "relative_position")}
    for name, g in total_heads.items():
        owner = name.split(".")[1]
        assert torch.allclose(g, task.weights[owner] * member[owner][0][name], atol=1e-6), name
        other = next(m for m in member if m != owner)
        assert torch.count_nonzero(member[other][0][name]) == 0, name
    for name, g in total_trunk.items():
        expected = sum(task.weights[m] * member[m][1][name] for m in member)
        assert torch.allclose(g, expected, atol=1e-5), name


def test_multitask_logs_per_task_metrics(make_cfg, tiny_data, tmp_path):
    cfg = make_cfg("profile=smoke", "data=synthetic", "task=multitask")
    net = instantiate(cfg.backbone)
    task = build_task(cfg.task.module, net, tiny_data)
    pretrain(net, task, tiny_data, cfg.train, tmp_path, CPU, 0, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for key in ("train_rotation_loss", "train_rotation_accuracy", "train_jigsaw_loss",
                "train_jigsaw_accuracy"):
        assert key in lines[0], key
    assert "test_jigsaw_accuracy" in lines[-1]


def test_layerwise_freezes_finished_stages_and_reconstruction_improves(make_cfg, tiny_data,
                                                                       tmp_path):
    cfg = make_cfg("profile=smoke", "data=synthetic", "task=layerwise", "train.epochs=3",
                   "train.steps_per_epoch=6")
    net = instantiate(cfg.backbone)
    task = build_task(cfg.task.module, net, tiny_data)
    snapshots = {}
    real_set_phase = task.set_phase

    def snapshot_then_set(phase):
        snapshots[phase.name] = {s: {k: v.clone() for k, v in getattr(net, s).state_dict().items()}
                                 for s in ("conv1", "conv2", "conv3")}
        real_set_phase(phase)

    task.set_phase = snapshot_then_set
    pretrain(net, task, tiny_data, cfg.train, tmp_path, CPU, 0, progress=False)
    final = {s: getattr(net, s).state_dict() for s in ("conv1", "conv2", "conv3")}
    same = lambda a, b: all(torch.equal(v, b[k]) for k, v in a.items())  # noqa: E731
    assert same(snapshots["conv2"]["conv1"], final["conv1"])  # frozen while conv2 trained
    assert not same(snapshots["conv2"]["conv2"], final["conv2"])  # conv2 did train
    assert not same(snapshots["conv1"]["conv1"], snapshots["conv2"]["conv1"])  # conv1 trained first
    assert same(snapshots["conv1"]["conv3"], final["conv3"])  # never part of layer-wise training
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for stage in ("conv1", "conv2"):
        losses = [x["loss"] for x in lines if x.get("phase") == stage]
        assert len(losses) == 3 and losses[-1] < losses[0], (stage, losses)
