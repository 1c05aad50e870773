"""Attribution methods on hand-built nets with known answers, on VGG, classifiers and fast nets;
and no hook is ever left on a model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from support import make_checkpoint
from reference_support import needs_vgg, no_hooks, one_thread, weights_path  # noqa: F401
from styletrain.checkpoint import load_transformer
from styletrain.errors import UserError
from styletrain.reference.attribution import GradCAM, GuidedBackprop, Occlusion, Saliency
from styletrain.reference.targets import (LayerScores, RegionScore, class_index, default_cam_layer,
                                          load_classifier)
from styletrain.vgg import LossNetwork


def relu_net() -> nn.Sequential:
    """score = w2 . relu(W1 x): hidden units h = (x0, x1, x0 + x1, -x0), w2 = (2, -1, 1, 5)."""
    net = nn.Sequential(nn.Linear(2, 4, bias=False), nn.ReLU(inplace=True), nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]))
        net[2].weight.copy_(torch.tensor([[2.0, -1.0, 1.0, 5.0]]))
    return net


def test_guided_backprop_matches_the_hand_computed_gradient() -> None:
    net, x = relu_net(), torch.tensor([[1.0, 2.0]])
    # h = (1, 2, 3, -1): units 0-2 are active. Plain gradient: W1^T (2, -1, 1, 0) = (3, 0).
    # Guided: negative gradients stop at each ReLU too: W1^T (2, 0, 1, 0) = (3, 1).
    assert torch.equal(GuidedBackprop(net).attribute(x, target=0), torch.tensor([[3.0, 1.0]]))
    x_grad = x.clone().requires_grad_(True)
    net(x_grad).sum().backward()
    assert torch.equal(x_grad.grad, torch.tensor([[3.0, 0.0]]))
    assert no_hooks(net)


def test_guided_backprop_with_a_reused_relu() -> None:
    relu = nn.ReLU()
    first, second = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        first.weight.fill_(-1.0)
        second.weight.fill_(-1.0)

    class Twice(nn.Module):
        def forward(self, x):  # relu(-relu(-x) + 1) ... one ReLU module called twice
            return relu(second(relu(first(x))) + 1.0)

    net = Twice()
    net.relu = relu
    # x = -2: first -> 2, relu -> 2, second -> -2, +1 -> -1, relu -> 0: the outer ReLU blocks everything
    assert torch.equal(GuidedBackprop(net).attribute(torch.tensor([[-2.0]]), target=0), torch.tensor([[0.0]]))
    # x = -0.5: 0.5 -> -0.5 + 1 = 0.5 > 0; the gradient into the inner ReLU is -1 < 0, so guided gives 0
    assert torch.equal(GuidedBackprop(net).attribute(torch.tensor([[-0.5]]), target=0), torch.tensor([[0.0]]))
    assert torch.equal(Saliency(net).attribute(torch.tensor([[-0.5]]), target=0), torch.tensor([[1.0]]))  # plain
    assert no_hooks(net)


class PatchNet(nn.Module):
    """Scores (B, 2): the mean of a 8x8 patch at rows 16-24, columns 40-48, and of the whole image."""

    def forward(self, x):
        return torch.stack([x[:, :, 16:24, 40:48].mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3))], dim=1)


def test_occlusion_finds_the_patch_that_drives_the_score() -> None:
    image = 0.6 + 0.4 * torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    attr = Occlusion(PatchNet(), window=8, stride=4).attribute(image, target=0)
    assert attr.shape == (1, 1, 64, 64)
    y, x = divmod(int(attr.flatten().argmax()), 64)
    assert 16 <= y < 24 and 40 <= x < 48
    assert attr[0, 0, :8, :8].abs().max() == 0  # windows far from the patch change nothing


def test_saliency_is_max_abs_gradient_over_colour() -> None:
    image = torch.rand(2, 3, 64, 64)
    attr = Saliency(PatchNet()).attribute(image, target=0)
    assert attr.shape == (2, 1, 64, 64)
    inside = torch.zeros(64, 64, dtype=torch.bool)
    inside[16:24, 40:48] = True
    assert torch.allclose(attr[:, 0][:, inside], torch.full((2, 64), 1 / (3 * 64)))
    assert attr[:, 0][:, ~inside].abs().max() == 0


def test_targets_are_checked() -> None:
    with pytest.raises(UserError, match="target must be in 0..1; got 2"):
        Saliency(PatchNet()).attribute(torch.rand(1, 3, 64, 64), target=2)
    with pytest.raises(UserError, match="choose one with target=0..1"):
        Saliency(PatchNet()).attribute(torch.rand(1, 3, 64, 64))


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def test_grad_cam_is_non_negative_and_input_sized() -> None:
    net = small_cnn()
    cam = GradCAM(net, net[3]).attribute(torch.rand(2, 3, 40, 48), target=1)
    assert cam.shape == (2, 1, 40, 48)
    assert cam.min() >= 0 and cam.max() > 0
    assert no_hooks(net)


@needs_vgg
def test_vgg_channel_targets_leave_no_hooks_after_success_and_error() -> None:
    network = LossNetwork(["relu2_2", "relu3_3"], weights=weights_path())
    model = LayerScores(network, "relu3_3")
    image = torch.rand(1, 3, 32, 32)
    for method in (Saliency(model), GuidedBackprop(model), GradCAM(model, network.module("relu2_2"))):
        attr = method.attribute(image, target=5)
        assert attr.shape[-2:] == (32, 32) and torch.isfinite(attr).all()
        assert no_hooks(network)
        with pytest.raises(UserError, match="target must be in 0..255"):
            method.attribute(image, target=999)
        assert no_hooks(network)
    cam = GradCAM(model, network.module("relu2_2")).attribute(image, target=5)
    assert cam.min() >= 0
    # the module is unchanged for training: same activations as a fresh forward
    with torch.no_grad():
        reference = LossNetwork(["relu3_3"], weights=weights_path())
        assert torch.equal(network(image)["relu3_3"], reference(image)["relu3_3"])


def test_grad_cam_hook_removed_when_the_layer_is_not_used() -> None:
    net = small_cnn()
    unused = nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match="was not called"):
        GradCAM(net, unused).attribute(torch.rand(1, 3, 16, 16), target=0)
    assert no_hooks(unused)


def test_classifier_with_local_weights(tmp_path) -> None:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18(num_classes=1000).state_dict(), path)
    model, categories = load_classifier("resnet18", path)
    assert categories[281] == "tabby" and class_index("tabby", categories) == 281
    image = torch.rand(1, 3, 64, 64)
    name = default_cam_layer(model.classifier, image)
    assert name.startswith("layer4")
    cam = GradCAM(model, model.classifier.get_submodule(name)).attribute(image, target=class_index("281", categories))
    assert cam.shape == (1, 1, 64, 64) and cam.min() >= 0
    assert no_hooks(model)
    with pytest.raises(UserError, match="unknown torchvision classifier 'resnet99'"):
        load_classifier("resnet99", path)
    with pytest.raises(UserError, match="classifier weights not found"):
        load_classifier("resnet18", tmp_path / "missing.pth")
    with pytest.raises(UserError, match="could not load"):
        load_classifier("alexnet", path)


def test_fast_net_region(tmp_path) -> None:
    net, _ = load_transformer(make_checkpoint(tmp_path / "multi.ckpt", ["candy", "mosaic"]))
    model = RegionScore(net, (8, 8, 16, 16), torch.tensor([[0.0, 1.0]]))
    image = torch.rand(1, 3, 32, 32)
    attr = Saliency(model).attribute(image)
    assert attr.shape == (1, 1, 32, 32) and attr.sum() > 0
    cam = GradCAM(model, net.blocks[3]).attribute(image)
    assert cam.shape == (1, 1, 32, 32) and cam.min() >= 0
    guided = GuidedBackprop(model).attribute(image)  # the fast net's ReLUs are modules it can hook
    plain = torch.func.grad(lambda x: model(x)[0, 0])(image)
    assert guided.shape == image.shape and not torch.allclose(guided, plain)
    assert no_hooks(net)
    with pytest.raises(UserError, match="lies outside the 32x32 image"):
        RegionScore(net, (8, 8, 40, 16), torch.tensor([[0.0, 1.0]]))(image)


def test_fast_net_region_target_defaults(tmp_path) -> None:
    from styletrain.reference.targets import fast_net_region

    image = torch.rand(1, 3, 32, 40)
    for names, style in ((["candy", "mosaic"], "mosaic"), (["mosaic"], None)):
        ckpt = make_checkpoint(tmp_path / f"{len(names)}.ckpt", names, num_residuals=2)
        target = fast_net_region(image, ckpt, style=style)
        assert target.box == (10, 8, 30, 24)  # the central quarter
        assert target.layer is target.model.net.blocks[4]  # the last residual block
        cam = GradCAM(target.model, target.layer).attribute(image, target=target.index)
        assert cam.shape == (1, 1, 32, 40) and no_hooks(target.model)
    with pytest.raises(UserError, match="holds 2 styles; choose one"):
        fast_net_region(image, tmp_path / "2.ckpt")
    with pytest.raises(UserError, match=r"region \[0, 0, 50, 8\] lies outside the 40x32 input"):
        fast_net_region(image, tmp_path / "1.ckpt", region=[0, 0, 50, 8])
