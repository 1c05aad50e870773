"""Gram, TV and perceptual-loss maths against naive loops."""

import itertools
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from styletrain.losses import LossConfig, LossInputs, LossTerm, PerceptualLoss, gram_matrix, total_variation
from styletrain.vgg import LossNetwork


def test_gram_matches_naive_loop():
    torch.manual_seed(0)
    feats = torch.randn(2, 3, 4, 5)
    gram = gram_matrix(feats)
    b, c, h, w = feats.shape
    for n, i, j in itertools.product(range(b), range(c), range(c)):
        naive = sum(feats[n, i, y, x] * feats[n, j, y, x] for y in range(h) for x in range(w)) / (c * h * w)
        assert gram[n, i, j].item() == pytest.approx(naive.item(), rel=1e-5, abs=1e-6)


def test_style_loss_under_bf16_autocast_is_computed_in_float32():
    """Training runs under bf16 autocast; near the target a bf16 Gram's rounding was 10x the loss itself."""
    torch.manual_seed(0)
    config = LossConfig(content_layer="relu1_2", style_layers=("relu1_2", "relu2_1"))
    vgg = LossNetwork(["relu1_2", "relu2_1"], weights="random")
    style = torch.rand(1, 3, 32, 32)
    loss = PerceptualLoss(config, [style], loss_network=vgg)
    output = (style + 0.01 * torch.randn_like(style)).clamp(0, 1)  # close to the target, where it matters
    features = {k: v.bfloat16() for k, v in vgg(output).items()}  # what bf16 VGG activations hand over
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gram_matrix(features["relu2_1"]).dtype == torch.float32
        mixed = loss.terms["style"](LossInputs(output, features, {}, torch.ones(1, 1)))
    exact = loss.terms["style"](LossInputs(output, {k: v.float() for k, v in features.items()}, {}, torch.ones(1, 1)))
    assert mixed.item() == pytest.approx(exact.item(), rel=1e-4)


def test_total_variation_matches_naive_loop():
    torch.manual_seed(0)
    img = torch.rand(2, 3, 4, 5)
    naive = 0.0
    for n, ch, y, x in itertools.product(range(2), range(3), range(4), range(5)):
        if y + 1 < 4:
            naive += ((img[n, ch, y + 1, x] - img[n, ch, y, x]) * 255) ** 2
        if x + 1 < 5:
            naive += ((img[n, ch, y, x + 1] - img[n, ch, y, x]) * 255) ** 2
    assert total_variation(img).item() == pytest.approx(naive.item() / 2, rel=1e-5)


def test_perceptual_loss_terms_match_hand_computation():
    torch.manual_seed(0)
    config = LossConfig(content_layer="relu1_2", style_layers=("relu1_1", "relu2_1"),
                        content_weight=2.0, style_weight=3.0, style_layer_weights=(1.0, 0.5), tv_weight=1e-6)
    vgg = LossNetwork(["relu1_1", "relu1_2", "relu2_1"], weights="random")
    styles = [torch.rand(1, 3, 24, 20), torch.rand(1, 3, 16, 16)]
    loss = PerceptualLoss(config, styles, loss_network=vgg)
    output, content = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    weights = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    terms = loss(output, weights, content=content)

    out_f, con_f = vgg(output), vgg(content)
    expected_content = 2.0 * F.mse_loss(out_f["relu1_2"], con_f["relu1_2"])
    expected_style = 0.0
    for layer, lw in (("relu1_1", 1.0), ("relu2_1", 0.5)):
        targets = [gram_matrix(vgg(s)[layer])[0] for s in styles]
        per_sample = [weights[b, 0] * targets[0] + weights[b, 1] * targets[1] for b in range(2)]
        expected_style += lw * F.mse_loss(gram_matrix(out_f[layer]), torch.stack(per_sample))
    assert list(terms) == ["content", "style", "tv"]
    assert terms["content"].item() == pytest.approx(expected_content.item(), rel=1e-5)
    assert terms["style"].item() == pytest.approx(3.0 * expected_style.item(), rel=1e-5)
    assert terms["tv"].item() == pytest.approx(1e-6 * total_variation(output).item(), rel=1e-5)
    assert terms.total.item() == pytest.approx(sum(terms.values()).item())
    assert terms.as_floats() == pytest.approx({**{k: v.item() for k, v in terms.items()}, "total": terms.total.item()})
    texture = loss(output, weights, use_content=False)
    assert list(texture) == ["style", "tv"] and texture["style"] == terms["style"]


class Brightness(LossTerm):
    """A made-up term: how far the output's mean is from mid-grey."""

    name = "brightness"

    def forward(self, inputs: LossInputs):
        return self.weight * (inputs.image.mean() - 0.5).abs()


@dataclass(frozen=True)
class BrightConfig(LossConfig):
    brightness_weight: float = 2.0

    def terms(self):
        return [*super().terms(), Brightness(self.brightness_weight)]


def test_a_term_added_to_the_config_is_reported_and_minimised():
    config = BrightConfig(content_layer="relu1_2", style_layers=("relu1_1",))
    loss = PerceptualLoss(config, [torch.rand(1, 3, 16, 16)], weights="random")
    output = torch.full((1, 3, 16, 16), 0.8)
    terms = loss(output, torch.ones(1, 1), content=torch.rand(1, 3, 16, 16))
    assert list(terms) == ["content", "style", "tv", "brightness"]
    assert terms["brightness"].item() == pytest.approx(2.0 * 0.3)
    assert terms.total.item() == pytest.approx(sum(v.item() for v in terms.values()))
    assert BrightConfig().to_dict()["brightness_weight"] == 2.0


def test_loss_config_round_trips_through_the_checkpoint_form():
    config = LossConfig(style_layers=("relu1_1", "relu2_1"), style_layer_weights=(1.0, 0.5), style_weight=3.0)
    stored = config.to_dict()
    assert stored["style_layers"] == ["relu1_1", "relu2_1"] and stored["style_layer_weights"] == [1.0, 0.5]
    assert LossConfig.from_dict(stored) == config
    with pytest.raises(ValueError, match="do not fit this styletrain"):
        LossConfig.from_dict({**stored, "colour_weight": 1.0})


def test_loss_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="style_layer_weights needs one weight per style layer"):
        LossConfig(style_layer_weights=(1.0,))
    with pytest.raises(ValueError, match="tv_weight must be non-negative"):
        LossConfig(tv_weight=-1)


def test_a_zero_style_row_has_no_style_loss_and_one_hot_rows_keep_the_mse():
    torch.manual_seed(0)
    loss = PerceptualLoss(LossConfig(), [torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)], weights="random")
    output, content = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # style 0, style 1, no style (identity)
    mixed = loss(output, rows, content=content)["style"]
    per_sample = [float(loss(output[i:i + 1], rows[i:i + 1], content=content[i:i + 1])["style"]) for i in range(3)]
    assert per_sample[2] == 0.0 and per_sample[0] > 0 and per_sample[1] > 0
    assert float(mixed) == pytest.approx(sum(per_sample) / 3, rel=1e-5)
