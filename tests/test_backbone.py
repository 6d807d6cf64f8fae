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
