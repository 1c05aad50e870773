"""Safe image reading: formats, corrupt files, pixel limits before decoding."""

import io

import numpy as np

import pytest
import torch
from PIL import Image

from styletrain.errors import UserError
from styletrain.images import check_output_path, open_image, resize_max_side, save_image, to_pil, to_tensor


def png_bytes(size=(20, 10), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, fmt)
    return buf.getvalue()


def test_round_trip_tensor_and_file(tmp_path):
    image = open_image(png_bytes())
    tensor = to_tensor(image)
    assert tensor.shape == (1, 3, 10, 20) and 0 <= tensor.min() and tensor.max() <= 1
    path = save_image(tensor, tmp_path / "sub" / "x.png")
    assert to_tensor(open_image(path)).allclose(tensor)
    assert to_pil(torch.full((3, 4, 4), float("nan"))).getpixel((0, 0)) == (0, 0, 0)


def test_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(UserError, match="not a readable"):
        open_image(b"hello")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(png_bytes((64, 64), "JPEG")[:200])
    with pytest.raises(UserError, match="could not be decoded"):
        open_image(truncated)
    with pytest.raises(UserError, match="not a readable"):
        open_image(png_bytes(fmt="BMP"))
    with pytest.raises(UserError, match="image not found"):
        open_image(tmp_path / "missing.png")


def test_pixel_limit_is_checked_from_the_header():
    with pytest.raises(UserError, match="above the limit of 100"):
        open_image(png_bytes((20, 10)), max_pixels=100)
    with pytest.raises(UserError, match="at least 16 px"):
        open_image(png_bytes((20, 10)), min_side=16)


def test_decompression_bomb_warning_is_an_error(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)  # 200 px is above it but below Pillow's 2x error
    with pytest.raises(UserError, match="could not be decoded"):
        open_image(png_bytes((20, 10)))


def test_resize_max_side_only_shrinks():
    image = Image.new("RGB", (400, 200))
    assert resize_max_side(image, 100).size == (100, 50)
    assert resize_max_side(image, 1000).size == (400, 200)


def test_output_path_extension_checked_up_front(tmp_path):
    with pytest.raises(UserError, match="use one of"):
        check_output_path(tmp_path / "x.gif")


def test_16_bit_grayscale_png_matches_its_8_bit_version():
    import io

    from styletrain.images import open_image

    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (24, 1))
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")  # mode I;16
    decoded = np.asarray(open_image(buffer.getvalue()), dtype=np.float64)
    expected = np.round(ramp / 257.0)
    assert decoded.shape == (24, 64, 3)
    assert np.abs(decoded[..., 0] - expected).max() <= 1.0
    assert decoded[..., 0].mean() == pytest.approx(127.5, abs=1.0)  # not clipped to white
