import pytest
import torch
from hydra.utils import instantiate

from ssl_bench.backbone import ConvBackbone, frozen_stages


@pytest.mark.parametrize("name,dim", [("small", 128), ("nin", 192)])
def test_backbones_from_config(make_cfg, name, dim):
    net = instantiate(make_cfg(f"backbone={name}").backbone)
    assert isinstance(net, ConvBackbone) and net.name == name
    x = torch.randn(2, 3, 32, 32)
    assert net(x).shape == (2, dim)
    assert net.features(x, "conv1").shape[-1] == 16
    assert net.features(x, "conv2").shape[-1] == 8
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, dim)  # any input >= 16 px


def test_frozen_stages_are_eval_and_gradient_free(make_cfg):
    net = instantiate(make_cfg().backbone)
    frozen = frozen_stages(net, "conv2")
    assert not frozen.training
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in net.conv3.parameters())


def test_a_preset_is_labelled_by_its_name_and_an_override_by_what_it_changes():
    from ssl_bench import configs
    from ssl_bench.backbone import backbone_label

    small2 = configs.preset("backbone", "small2")
    assert small2 is not None and backbone_label(small2, small2) == "small2"
    conv4 = dict(small2, conv4={"channels": [128], "kernels": [3], "pool": None})
    wider = dict(small2, conv1={"channels": [48, 48], "kernels": [3, 3], "pool": "max"})
    assert backbone_label(conv4, small2) == "small2[conv4=128/3]"
    assert backbone_label(wider, small2) == "small2[conv1=48-48/3-3/max]"
    # two architectures never share a label (the report would average them in one cell)
    assert len({backbone_label(c, small2) for c in (small2, conv4, wider)}) == 3
    # a searched network: its genotype is each search seed's own product (seeds share a cell)
    searched = configs.preset("backbone", "searched")
    found = dict(searched, genotype="runs/search/s0/genotype_ab12.json")
    assert backbone_label(found, searched) == "searched"
    assert backbone_label(dict(found, param_budget=10240), searched) == "searched[param_budget=10240]"
    # a key the preset lacks, and a name with no preset file (the user's own config): as given
    assert backbone_label(dict(small2, extra=2), small2) == "small2[extra=2]"
    assert configs.preset("backbone", "mine") is None and backbone_label({"name": "mine"}, None) == "mine"


def test_rows_carry_the_label_of_the_backbone_they_ran_with(make_cfg, tmp_path):
    from ssl_bench.run import backbone_name

    assert backbone_name(make_cfg("profile=smoke")) == "small"
    assert backbone_name(make_cfg("backbone=small2")) == "small2"
    assert backbone_name(make_cfg("backbone=small", "backbone.conv3.channels=[96]")) == "small[conv3=96/3]"
    assert backbone_name(make_cfg("profile=paper")) == "nin[conv4=192-192-192/3-1-1]"
