"""The transformer net, its norm layers by name, and growing a multi-style net."""

import pytest
import torch
from torch import nn

from styletrain.checkpoint import load_transformer, save_transformer
from styletrain.metadata import ModelMetadata
from styletrain.transformer import NORMS, ConditionalInstanceNorm2d, TransformerNet, register_norm, widen


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


def test_single_style_net_takes_or_ignores_weights():
    torch.manual_seed(0)
    net = TransformerNet(width=4, num_residuals=1).eval()
    x = torch.rand(2, 3, 20, 24)
    torch.testing.assert_close(net(x, torch.ones(2, 1)), net(x))
    torch.testing.assert_close(net(x, torch.ones(1, 1)), net(x))
    with pytest.raises(ValueError, match="1 columns"):
        net(x, torch.ones(2, 3))


def test_each_output_depends_only_on_its_own_input():
    """Instance norm, no batch statistics: a photo's stylization is the same alone, in any batch,
    and in training and eval mode (apart from eval's clamp), so batched serving cannot change it."""
    torch.manual_seed(0)
    for net in (TransformerNet(width=4, num_residuals=1), TransformerNet(3, width=4, num_residuals=1)):
        x = torch.rand(3, 3, 24, 20)
        w = torch.eye(net.num_styles)[[0, -1, 0]]
        with torch.no_grad():
            alone = net.eval()(x[1:2], w[1:2])
            torch.testing.assert_close(net(x, w)[1:2], alone)
            torch.testing.assert_close(net.train()(x, w)[1:2].clamp(0, 1), alone)


def test_the_net_cannot_see_the_photos_brightness_contrast_or_colour_cast():
    """Instance norm after the first conv removes any per-channel offset and any overall gain of the
    input, so no style row (an "identity" row included) can give back the photo's own colours: that is
    why --strength blends pixels with the photo."""
    torch.manual_seed(0)
    net = TransformerNet(2, width=8, num_residuals=1).eval()
    for m in net.modules():
        if isinstance(m, ConditionalInstanceNorm2d):
            m.scale.data.uniform_(0.5, 2)
            m.shift.data.uniform_(-1, 1)
    photo = torch.rand(1, 3, 24, 24) * 0.5 + 0.2
    recoloured = 0.6 * photo + torch.tensor([0.1, -0.05, 0.2]).view(1, 3, 1, 1)  # darker, flatter, tinted
    weights = torch.tensor([[0.0, 1.0]])
    with torch.no_grad():
        out = net(photo, weights)
        # equal up to the norm's eps (the recoloured photo's variance is smaller): under 1/255
        assert (net(recoloured, weights) - out).abs().max() < 1 / 255
        assert (net(photo.flip(-1), weights).flip(-1) - out).abs().max() > 10 / 255  # it does see content


def test_config_rebuilds_the_same_net():
    torch.manual_seed(0)
    for net in (TransformerNet(width=8, num_residuals=2), TransformerNet(4, width=4, num_residuals=0)):
        copy = TransformerNet(**net.config())
        copy.load_state_dict(net.state_dict())
        x, w = torch.rand(1, 3, 16, 16), torch.eye(net.num_styles)[:1]
        torch.testing.assert_close(copy.eval()(x, w), net.eval()(x, w))


def test_old_conditional_configs_build_the_same_net():
    for conditional, num_styles, norm in ((False, 1, "instance"), (True, 3, "conditional_instance")):
        old = TransformerNet(num_styles, width=4, num_residuals=1, conditional=conditional)
        new = TransformerNet(num_styles, width=4, num_residuals=1, norm=norm)
        assert old.config() == new.config() == {"num_styles": num_styles, "width": 4, "num_residuals": 1, "norm": norm}
        assert {k: v.shape for k, v in old.state_dict().items()} == {k: v.shape for k, v in new.state_dict().items()}
    with pytest.raises(ValueError, match="contradicts"):
        TransformerNet(3, norm="conditional_instance", conditional=False)


def test_unknown_norm_and_too_many_styles_for_instance_norm():
    with pytest.raises(ValueError, match="unknown norm 'batch'; choose from"):
        TransformerNet(norm="batch")
    with pytest.raises(ValueError, match="an instance-norm net has one style; got num_styles=2"):
        TransformerNet(2, norm="instance")


@pytest.fixture
def scaled_norm():
    """A norm registered for one test: instance norm whose output is scaled by the style weights' sum."""

    @register_norm("test_scaled")
    class ScaledNorm(nn.Module):
        def __init__(self, num_features: int, num_styles: int) -> None:
            super().__init__()
            self.norm = nn.InstanceNorm2d(num_features, affine=True)

        def forward(self, x, style_weights=None):
            scale = 1.0 if style_weights is None else style_weights.sum(1)[:, None, None, None]
            return self.norm(x) * scale

    yield "test_scaled"
    del NORMS["test_scaled"]


def test_a_registered_norm_works_without_touching_callers(scaled_norm, tmp_path):
    torch.manual_seed(0)
    net = TransformerNet(2, width=4, num_residuals=1, norm=scaled_norm).eval()
    x = torch.rand(1, 3, 20, 20)
    assert not torch.allclose(net(x, torch.tensor([[1.0, 0.0]])), net(x, torch.tensor([[0.3, 0.2]])))
    path = save_transformer(net, ModelMetadata(style_names=["a", "b"]), tmp_path / "net.ckpt")
    loaded, meta = load_transformer(path)
    assert meta.net["norm"] == scaled_norm
    torch.testing.assert_close(loaded(x, torch.tensor([[0.3, 0.2]])), net(x, torch.tensor([[0.3, 0.2]])))


def test_adding_styles_keeps_old_rows_and_trains_only_new_ones():
    torch.manual_seed(0)
    net = TransformerNet(2, width=4, num_residuals=1)
    for p in net.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    x = torch.rand(2, 3, 20, 20)
    before = net.eval()(x, torch.eye(2)).detach()
    net.add_styles(1)
    assert net.num_styles == 3 and net.config()["num_styles"] == 3
    torch.testing.assert_close(net(x, torch.eye(3)[:2]), before, rtol=0, atol=0)
    norm = net.norm_layers()[0]
    torch.testing.assert_close(norm.scale[2], norm.scale[:2].mean(0))
    net.train()
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        net(x, torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.0, 0.5]])).square().mean().backward()
        optimizer.step()
    torch.testing.assert_close(net.eval()(x, torch.eye(3)[:2]), before, rtol=0, atol=0)
    assert not torch.equal(norm.scale[2], norm.scale[:2].mean(0))
    with pytest.raises(ValueError, match="cannot learn new styles"):
        TransformerNet(width=4, num_residuals=1).add_styles(1)


@pytest.mark.parametrize("num_styles", [1, 3])
def test_widening_keeps_the_output_and_lets_the_copies_learn_apart(num_styles):
    torch.manual_seed(0)
    narrow = TransformerNet(num_styles, width=4, num_residuals=2).double()
    with torch.no_grad():  # trained-looking norms, not the all-ones default
        for p in narrow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    wide = widen(narrow, 8)
    assert wide.config() == {**narrow.config(), "width": 8} and wide.training
    x = torch.rand(2, 3, 36, 44, dtype=torch.float64)
    w = torch.softmax(torch.randn(2, num_styles, dtype=torch.float64), 1) if num_styles > 1 else None
    torch.testing.assert_close(wide(x, w), narrow(x, w), rtol=0, atol=1e-10)

    wide(x, w).square().mean().backward()
    grad = wide.blocks[1].conv.weight.grad  # out channels j and 8 + j are copies of narrow channel j
    assert not torch.allclose(grad[:8], grad[8:])  # the random shares break the symmetry


def test_widening_needs_a_multiple_of_the_width():
    with pytest.raises(ValueError, match="multiple of 16"):
        widen(TransformerNet(width=16, num_residuals=1), 24)
