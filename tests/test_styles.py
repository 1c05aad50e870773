"""Style names and blend weights."""

import math

import numpy as np
import pytest

from styletrain.errors import UserError
from styletrain.styles import parse_blend, style_name, style_weights

NAMES = ["candy", "mosaic", "udnie"]


def test_a_style_is_chosen_by_the_name_of_its_image_file():
    names = [style_name(p) for p in ("../shared/data/styles/the_scream.jpg", "art/seated-nude.png")]
    np.testing.assert_array_equal(style_weights(names, style="the_scream"), [1, 0])
    np.testing.assert_allclose(style_weights(names, blend=parse_blend("seated-nude=3,the_scream=1")), [0.25, 0.75])


def test_parse_blend():
    assert parse_blend("candy=0.7, mosaic=0.3") == {"candy": 0.7, "mosaic": 0.3}
    assert parse_blend("candy = 0.7") == {"candy": 0.7}
    for bad in ("candy", "candy=x", "=1", "", "a=1,a=2"):
        with pytest.raises(UserError):
            parse_blend(bad)


def test_one_style_is_one_hot():
    np.testing.assert_array_equal(style_weights(NAMES, style="mosaic"), [0, 1, 0])
    np.testing.assert_array_equal(style_weights(["only"]), [1])


def test_blend_is_normalised():
    np.testing.assert_allclose(style_weights(NAMES, blend={"candy": 3, "udnie": 1}), [0.75, 0, 0.25])


def test_huge_weights_still_normalise():
    # their plain sum overflows to inf, which made every weight 0 and the output flat
    np.testing.assert_allclose(style_weights(NAMES, blend={"candy": 1e308, "mosaic": 1e308}), [0.5, 0.5, 0])


@pytest.mark.parametrize("blend", [{"candy": -1.0, "mosaic": 2.0}, {"candy": 0.0}, {"candy": math.inf},
                                   {"candy": math.nan}])
def test_bad_weights_are_rejected_with_the_values(blend):
    with pytest.raises(UserError, match="non-negative and sum to more than 0; got"):
        style_weights(NAMES, blend=blend)


def test_unknown_and_missing_style():
    with pytest.raises(UserError, match=r"unknown style 'picasso'; available: \['candy'"):
        style_weights(NAMES, style="picasso")
    with pytest.raises(UserError, match=r"unknown style\(s\) \['picasso'\] in blend"):
        style_weights(NAMES, blend={"picasso": 1.0})
    with pytest.raises(UserError, match="holds 3 styles; choose one"):
        style_weights(NAMES)


def test_strength_mixes_in_the_identity_row_or_asks_for_a_pixel_blend():
    from styletrain.styles import with_strength

    names = ["candy", "udnie", "identity"]
    weights = style_weights(names, blend={"candy": 1, "udnie": 3})
    mixed, method = with_strength(names, weights, 0.4)
    np.testing.assert_allclose(mixed, [0.1, 0.3, 0.6], atol=1e-6)
    assert method == "identity"
    assert with_strength(["candy", "udnie"], weights[:2], 0.4)[1] == "pixel"
    full, method = with_strength(names, weights, 1.0)
    assert method == "" and full is weights
    with pytest.raises(UserError, match="strength must be between 0"):
        with_strength(names, weights, 1.5)


def test_errors_echo_bounded_input():
    """Unknown names, blend text and weights are echoed cut short, however much the user sent."""
    blend = {f"style_{i}_" + "x" * 200: 1.0 for i in range(1000)}
    with pytest.raises(UserError) as info:
        style_weights(NAMES, blend=blend)
    message = str(info.value)
    assert len(message) < 400, message
    assert "... and 995 more" in message and "x" * 41 not in message
    with pytest.raises(UserError, match=r"got \{'candy': -1.0\}") as info:
        style_weights(NAMES, blend={"candy": -1.0, **{n: 1.0 for n in NAMES[1:]}})
    with pytest.raises(UserError) as info:
        parse_blend("candy=1," * 5000 + "oops")
    assert len(str(info.value)) < 200
    with pytest.raises(UserError) as info:
        style_weights(NAMES, style="y" * 10_000)
    assert len(str(info.value)) < 200
