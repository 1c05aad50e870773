"""The transformer net and conditional instance norm."""

import pytest
import torch
from torch import nn

from styletrain.transformer import ConditionalInstanceNorm2d, TransformerNet


def test_cin_one_hot_equals_instance_norm_with_that_styles_affine():
    torch.manual_seed(0)
    cin = ConditionalInstanceNorm2d(5, 3)
    cin.scale.data.uniform_(0.5, 2)
    cin.shift.data.uniform_(-1, 1)
    x = torch.randn(2, 5, 7, 9)
    for k in range(3):
        inorm = nn.InstanceNorm2d(5, affine=True)
        inorm.weight.data, inorm.bias.data = cin.scale[k].detach().clone(), cin.shift[k].detach().clone()
        w = torch.zeros(2, 3)
        w[:, k] = 1
        torch.testing.assert_close(cin(x, w), inorm(x))


def test_cin_blend_is_convex_combination_of_scale_and_shift():
    torch.manual_seed(0)
    cin = ConditionalInstanceNorm2d(4, 3)
    cin.scale.data.uniform_(0.5, 2)
    cin.shift.data.uniform_(-1, 1)
    x = torch.randn(1, 4, 6, 6)
    w = torch.tensor([[0.2, 0.5, 0.3]])
    normed = nn.functional.instance_norm(x)
    scale = sum(w[0, k] * cin.scale[k] for k in range(3))
    shift = sum(w[0, k] * cin.shift[k] for k in range(3))
    torch.testing.assert_close(cin(x, w), normed * scale[None, :, None, None] + shift[None, :, None, None])


def test_cin_rows_differ_within_a_batch():
    torch.manual_seed(0)
    cin = ConditionalInstanceNorm2d(4, 2)
    cin.scale.data.uniform_(0.5, 2)
    x = torch.randn(1, 4, 6, 6).expand(2, -1, -1, -1)
    out = cin(x, torch.eye(2))
    assert not torch.allclose(out[0], out[1])
    torch.testing.assert_close(out[0:1], cin(x[:1], torch.tensor([[1.0, 0.0]])))


def test_cin_gradients_reach_only_rows_in_use():
    cin = ConditionalInstanceNorm2d(4, 3)
    out = cin(torch.randn(2, 4, 5, 5), torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.4, 0.6]]))
    out.square().sum().backward()
    assert torch.all(cin.scale.grad[0] == 0) and torch.all(cin.shift.grad[0] == 0)
    assert cin.scale.grad[1:].abs().sum() > 0 and cin.shift.grad[2].abs().sum() > 0


@pytest.mark.parametrize("size", [(16, 16), (17, 23), (31, 18), (64, 45)])
def test_transformer_keeps_any_input_size(size):
    net = TransformerNet(width=4, num_residuals=1).eval()
    out = net(torch.rand(1, 3, *size))
    assert out.shape == (1, 3, *size)
    assert out.min() >= 0 and out.max() <= 1


def test_multi_style_net_needs_weights_and_blends_per_sample():
    torch.manual_seed(0)
    net = TransformerNet(3, width=4, num_residuals=1).eval()
    for p in net.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    x = torch.rand(2, 3, 20, 20)
    with pytest.raises(ValueError, match="pass style_weights"):
        net(x)
    with pytest.raises(ValueError, match="3 columns"):
        net(x, torch.ones(2, 2))
    out = net(x, torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]))
    torch.testing.assert_close(out[1:], net(x[1:], torch.tensor([[0, 0, 1.0]])))
    torch.testing.assert_close(net(x, torch.tensor([[1.0, 0, 0]])), net(x, torch.tensor([[1.0, 0, 0]]).expand(2, -1)))


def test_small_variant_is_cheaper():
    params = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert params(TransformerNet(width=16)) < params(TransformerNet()) / 3


def test_no_transposed_convolutions_or_batch_norm():
    kinds = {type(m) for m in TransformerNet(2).modules()}
    assert nn.ConvTranspose2d not in kinds and nn.BatchNorm2d not in kinds
    assert all(not m.track_running_stats for m in TransformerNet().modules() if isinstance(m, nn.InstanceNorm2d))
