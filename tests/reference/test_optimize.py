"""The shared optimisation loop and the image transforms, on toy objectives (no VGG)."""

from __future__ import annotations

import pytest
import torch

from reference_support import one_thread  # noqa: F401  (autouse fixture)
from styletrain.errors import UserError
from styletrain.reference import param, transforms
from styletrain.reference.optimize import optimize


def quadratic(target: torch.Tensor):
    return lambda image: {"distance": (image - target).pow(2).sum()}


@pytest.mark.parametrize("method, steps", [("lbfgs", 10), ("adam", 60), ("ascent", 60)])
def test_each_method_reaches_the_target(method: str, steps: int) -> None:
    torch.manual_seed(0)
    target = torch.rand(1, 3, 8, 8) * 0.8 + 0.1
    start = torch.full_like(target, 0.5)
    result = optimize(start, quadratic(target), steps=steps, method=method, lr=0.005 if method == "ascent" else None)
    first = float(quadratic(target)(start)["distance"])
    assert result.losses["distance"] < 0.05 * first
    assert result.losses["total"] == pytest.approx(result.losses["distance"])
    assert torch.equal(start, torch.full_like(target, 0.5)), "the input must not change"


def test_pixels_stay_in_range() -> None:
    target = torch.full((1, 3, 4, 4), 2.0)  # outside [0, 1]: the box constraint holds the pixels at 1
    result = optimize(torch.full_like(target, 0.5), quadratic(target), steps=5, method="adam", lr=0.5)
    assert result.image.min() >= 0 and result.image.max() <= 1
    assert torch.allclose(result.image, torch.ones_like(target))


def test_transforms_and_regularisers_are_applied() -> None:
    seen = []
    result = optimize(torch.full((1, 3, 4, 4), 0.5), lambda im: seen.append(im.shape) or {"x": im.sum() * 0},
                      steps=3, method="adam", transforms=[lambda im: im[..., :2, :2]],
                      regularisers=[lambda im, step: im.fill_(0.25)])
    assert all(shape[-2:] == (2, 2) for shape in seen)
    assert torch.allclose(result.image, torch.full((1, 3, 4, 4), 0.25))


def test_bad_settings_are_user_errors() -> None:
    image = torch.zeros(1, 3, 4, 4)
    with pytest.raises(UserError, match="optimizer must be one of lbfgs, adam, ascent; got 'sgd'"):
        optimize(image, quadratic(image), steps=1, method="sgd")
    with pytest.raises(UserError, match="steps must be non-negative"):
        optimize(image, quadratic(image), steps=-1)


def test_non_finite_loss_stops_with_advice() -> None:
    image = torch.zeros(1, 3, 4, 4)
    with pytest.raises(UserError, match="lower the learning rate"):
        optimize(image, lambda im: {"x": im.sum() * float("nan")}, steps=2, method="adam")


def test_blur_keeps_constant_images_and_smooths_noise() -> None:
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(transforms.gaussian_blur(flat, 1.0), flat, atol=1e-6)
    noise = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert transforms.gaussian_blur(noise, 1.0).std() < 0.5 * noise.std()


def test_jitter_rolls_by_at_most_max_shift() -> None:
    image = torch.arange(64.0).view(1, 1, 8, 8)
    shifted = transforms.jitter(2, torch.Generator().manual_seed(0))(image)
    assert any(torch.equal(shifted, torch.roll(image, (dy, dx), (-2, -1)))
               for dy in range(-2, 3) for dx in range(-2, 3))


def test_yosinski_regularisers() -> None:
    image = torch.tensor([0.5, 0.6, 0.9, 0.1]).view(1, 1, 2, 2).expand(1, 3, 2, 2).clone()
    transforms.decay(0.5)(image, 0)
    assert torch.allclose(image[0, 0].flatten(), torch.tensor([0.5, 0.55, 0.7, 0.3]))
    transforms.clip_small_norm(50)(image, 0)  # the weakest half (0.5, 0.55) goes to grey
    assert torch.allclose(image[0, 0].flatten(), torch.tensor([0.5, 0.5, 0.7, 0.3]))
    blurred = torch.rand(1, 3, 8, 8)
    before = blurred.clone()
    transforms.blur_every(2, 1.0)(blurred, 0)
    assert torch.equal(blurred, before)
    transforms.blur_every(2, 1.0)(blurred, 1)
    assert not torch.equal(blurred, before)


def test_initial_images() -> None:
    content = torch.rand(1, 3, 8, 12)
    assert torch.equal(param.initial_image("content", content=content), content)
    noise = param.initial_image("noise", content=content, generator=torch.Generator().manual_seed(0))
    assert noise.shape == content.shape and 0 <= noise.min() and noise.max() <= 1
    assert param.initial_image("style", content=content, style=torch.rand(1, 3, 20, 20)).shape == content.shape
    with pytest.raises(UserError, match="init must be one of content, noise, style; got 'zeros'"):
        param.initial_image("zeros", content=content)
    assert param.scaled_size((100, 200), 50) == (25, 50)


def test_lbfgs_takes_no_step_regularisers() -> None:
    image = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="step regularisers need Adam or ascent"):
        optimize(image, quadratic(image), steps=1, regularisers=[lambda im, step: None])


def test_lbfgs_stays_stable_from_a_far_start() -> None:
    # steep objective: a plain L-BFGS fallback step of -gradient would overshoot by orders of magnitude
    target = torch.full((1, 3, 8, 8), 0.25)
    result = optimize(torch.full_like(target, 0.9), lambda im: {"d": 1e6 * (im - target).pow(4).sum()}, steps=20)
    assert result.losses["d"] < 1e6 * (0.65**4) * 192 * 1e-3
