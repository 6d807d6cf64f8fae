import pytest
import torch
from hydra.utils import instantiate

from ssl_bench.evaluate import evaluate, make_classifier, num_steps


def _snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("feature_cache", [True, False])
def test_frozen_stages_are_bit_identical_after_evaluation(make_cfg, tiny_data, feature_cache):
    cfg = make_cfg("eval.labels_per_class=[5,10]", "eval.min_steps=5", "eval.max_steps=5",
                   f"eval.feature_cache={feature_cache}")
    net = instantiate(cfg.backbone)
    net.train()  # evaluation must switch the frozen stages to eval mode itself
    before = {s: _snapshot(getattr(net, s)) for s in ("conv1", "conv2")}
    conv3_before = _snapshot(net.conv3)
    results = evaluate(net, tiny_data, cfg.eval, seed=0, device=torch.device("cpu"),
                       progress=False)
    assert [r["labels_per_class"] for r in results] == [5, 10]
    assert all(0.0 <= r["test_acc"] <= 100.0 for r in results)
    for s in ("conv1", "conv2"):
        after = getattr(net, s).state_dict()
        assert before[s].keys() == after.keys()
        for k, v in before[s].items():  # weights and BatchNorm buffers alike
            assert torch.equal(v, after[k]), f"{s}.{k} changed"
    # the backbone's own conv3 is untouched too: the evaluator trains a copy
    for k, v in conv3_before.items():
        assert torch.equal(v, net.conv3.state_dict()[k])


@pytest.mark.slow  # 30 s on a 2-core Zen 3: the slow tier
def test_evaluator_learns_on_synthetic(make_cfg, tiny_data):
    cfg = make_cfg("eval.labels_per_class=[20]", "eval.min_steps=150", "eval.max_steps=150")
    net = instantiate(cfg.backbone)
    acc = evaluate(net, tiny_data, cfg.eval, 0, torch.device("cpu"), progress=False)[0]["test_acc"]
    assert acc > 30.0  # chance is 10%


def test_same_seed_same_accuracy(make_cfg, tiny_data):
    cfg = make_cfg("eval.labels_per_class=[5]", "eval.min_steps=10", "eval.max_steps=10")
    net = instantiate(cfg.backbone)
    runs = [evaluate(net, tiny_data, cfg.eval, 3, torch.device("cpu"), progress=False)[0]
            for _ in range(2)]
    assert runs[0]["test_acc"] == runs[1]["test_acc"]


def test_reinit_option(make_cfg):
    net = instantiate(make_cfg().backbone)
    fresh = make_classifier(net, 10, reinit_conv3=True, seed=0)
    kept = make_classifier(net, 10, reinit_conv3=False, seed=0)
    w = net.conv3[0].weight
    assert torch.equal(kept.conv3[0].weight, w)
    assert not torch.equal(fresh.conv3[0].weight, w)
    assert fresh.conv3[0].weight is not w


def test_step_budget():
    assert num_steps(200, 128, epochs=30, min_steps=500, max_steps=None) == 500
    assert num_steps(50000, 128, epochs=30, min_steps=500, max_steps=600) == 600
    assert num_steps(1000, 100, epochs=30, min_steps=10, max_steps=None) == 300
