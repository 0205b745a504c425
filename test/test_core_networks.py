import pytest
import torch

from illexp_ros.core.networks import (
    ACAB,
    AttentionNet,
    EnhancementNet,
    IllExpNet,
    build_model,
    parameter_count,
)

torch.set_num_threads(1)
TINY = dict(attention_width=8, widths=(8, 16, 32, 64))


@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (2, 3, 16, 24), (1, 3, 1, 1)])
def test_tiny_net_any_size(shape):
    net = IllExpNet(**TINY).eval()
    with torch.no_grad():
        out, em = net(torch.rand(shape))
    assert out.shape == shape and em.shape == shape
    assert out.min() >= 0 and out.max() <= 1 and em.min() >= 0 and em.max() <= 1


def test_default_net_odd_size_481x321():
    net = IllExpNet().eval()
    with torch.no_grad():
        out, em = net(torch.rand(1, 3, 321, 481))
    assert out.shape == (1, 3, 321, 481) and em.shape == (1, 3, 321, 481)


def test_default_sizes_match_the_description():
    net = IllExpNet()
    # attention: 7 dilated blocks 1..64 at width 24, then two convs to 3 channels
    dilations = [blk[0].dilation[0] for blk in net.attention.context]
    assert dilations == [1, 2, 4, 8, 16, 32, 64]
    assert net.attention.context[0][0].out_channels == 24
    assert net.enhancement.stem.branches[0].dilation[0] == 1
    assert [b.dilation[0] for b in net.enhancement.stem.branches] == [1, 2, 4, 8]
    assert [d[0].out_channels for d in net.enhancement.down] == [64, 128, 256]
    assert parameter_count(net) == parameter_count(net.attention) + parameter_count(net.enhancement)


def test_acab_branches_split_channels():
    block = ACAB(6, 32)
    assert all(b.out_channels == 8 for b in block.branches)
    with pytest.raises(ValueError):
        ACAB(6, 30)
    y = block(torch.rand(2, 6, 9, 11))
    assert y.shape == (2, 32, 9, 11)


def test_ablations_change_the_architecture():
    no_att = IllExpNet(use_attention=False, **TINY).eval()
    assert no_att.attention is None
    with torch.no_grad():
        out, em = no_att(torch.rand(1, 3, 16, 16))
    assert torch.count_nonzero(em) == 0 and out.shape == (1, 3, 16, 16)
    no_acab = IllExpNet(use_acab=False, **TINY)
    assert not any(isinstance(m, ACAB) for m in no_acab.modules())
    assert any(isinstance(m, ACAB) for m in IllExpNet(**TINY).modules())


def test_components_standalone():
    assert AttentionNet()(torch.rand(1, 3, 20, 20)).shape == (1, 3, 20, 20)
    assert EnhancementNet(in_channels=3, widths=(8, 16))(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8, 8)


def test_build_model_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown model config keys"):
        build_model({"width": 3})
    assert isinstance(build_model({"attention_width": 8, "widths": [8, 16]}), IllExpNet)
