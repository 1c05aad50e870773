"""The loss network: named layers, truncation, frozen weights, weight loading and its errors."""

import pytest
import torch
import torchvision

from styletrain.errors import UserError
from styletrain.vgg import WEIGHTS_ENV, LossNetwork, layer_names, load_features


def test_layer_names_follow_torchvision_features():
    names = layer_names("vgg16")
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert names.index("relu4_3") == 22 and len(names) == 31
    assert "relu5_4" in layer_names("vgg19")


def test_truncated_frozen_and_stops_early():
    net = LossNetwork(["relu1_2", "relu2_2"], weights="random")
    assert len(net.features) == layer_names().index("relu2_2") + 1
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    out = net(x)
    assert out["relu1_2"].shape == (1, 64, 32, 32) and out["relu2_2"].shape == (1, 128, 16, 16)
    assert set(net(x, ["relu1_2"])) == {"relu1_2"}
    out["relu2_2"].sum().backward()
    assert x.grad is not None


def test_unknown_layer_is_a_user_error():
    with pytest.raises(UserError, match="unknown vgg16 layer"):
        LossNetwork(["relu9_9"], weights="random")


def test_missing_weights_file_says_how_to_fix(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="--vgg-weights"):
        LossNetwork(["relu1_2"], weights=tmp_path / "nope.pth")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(UserError, match="not found"):
        LossNetwork(["relu1_2"])


def test_offline_torchvision_download_fails_with_instructions(monkeypatch, tmp_path):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache: torchvision must download

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(UserError, match=f"--vgg-weights PATH or set {WEIGHTS_ENV}"):
        LossNetwork(["relu1_2"])


def test_accepts_features_only_full_and_float16_state_dicts(tmp_path):
    reference = load_features(weights="random", upto=4)
    full = {f"features.{k}": v for k, v in reference.state_dict().items()}
    full["classifier.0.weight"] = torch.zeros(1)
    variants = {"full.pth": full, "bare.pth": reference.state_dict(),
                "half.pth": {k: v.half() for k, v in full.items()}}
    for name, state in variants.items():
        torch.save(state, tmp_path / name)
        loaded = load_features(weights=tmp_path / name, upto=4)
        tol = 1e-3 if name == "half.pth" else 0
        assert torch.allclose(loaded[0].weight, reference[0].weight, atol=tol), name


def test_truncated_file_too_short_for_requested_layer(tmp_path):
    torch.save(load_features(weights="random", upto=4).state_dict(), tmp_path / "short.pth")
    with pytest.raises(UserError, match="lack"):
        LossNetwork(["relu3_3"], weights=tmp_path / "short.pth")


def test_real_weights_give_imagenet_like_activations(vgg_weights):
    net = LossNetwork(["relu4_3"], weights=vgg_weights)
    out = net(torch.rand(1, 3, 64, 64))["relu4_3"]
    assert out.shape == (1, 512, 8, 8) and torch.isfinite(out).all() and out.abs().sum() > 0


class _Payload:
    """Unpickling this would run code: what a planted weights file could do."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_a_file_that_is_not_vgg_weights_says_what_to_pass_without_unsafe_advice(tmp_path, single_ckpt):
    from PIL import Image

    Image.new("RGB", (20, 20)).save(tmp_path / "photo.jpg")
    with pytest.raises(UserError, match=r"photo.jpg is a JPEG image, not VGG weights: pass") as error:
        LossNetwork(["relu1_2"], weights=tmp_path / "photo.jpg")
    assert "weights_only" not in str(error.value)
    with pytest.raises(UserError, match=r"single.ckpt is a styletrain checkpoint, not a VGG16 features "
                                        r"state_dict: pass .*--vgg-weights"):
        LossNetwork(["relu1_2"], weights=single_ckpt)
    torch.save({"0.weight": _Payload()}, tmp_path / "planted.pth")
    with pytest.raises(UserError, match="refuses to load") as error:
        LossNetwork(["relu1_2"], weights=tmp_path / "planted.pth")
    assert "weights_only" not in str(error.value)
