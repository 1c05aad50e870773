"""Safe image reading (formats, corrupt files, pixel limits before decoding), conversion and encoding."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from styletrain.errors import UserError
from styletrain.images import (array_to_image, check_output_path, check_output_size, check_photos, encode_image,
                               image_size, image_to_array, open_image, resize_max_side, save_image, to_pil, to_tensor)


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


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(16, 16), (16, 40), (53, 37)])
def test_array_round_trip_is_exact(size):
    image = random_image(*size)
    array = image_to_array(image)
    assert array.shape == (1, 3, size[1], size[0]) and array.dtype == np.float32
    assert 0 <= array.min() and array.max() <= 1 and array.flags.c_contiguous
    np.testing.assert_array_equal(np.asarray(array_to_image(array)), np.asarray(image))
    np.testing.assert_array_equal(np.asarray(array_to_image(array[0])), np.asarray(image))
    np.testing.assert_array_equal(np.asarray(to_pil(to_tensor(image))), np.asarray(image))


def test_grey_and_alpha_images_become_rgb():
    assert image_to_array(Image.new("L", (16, 16), 255)).shape == (1, 3, 16, 16)
    assert image_to_array(Image.new("RGBA", (16, 16), (0, 0, 255, 0)))[0, 2].min() == 1.0


def test_out_of_range_and_non_finite_values_are_clamped():
    values = np.array([-0.5, 0.0, 0.5, 1.0, 1.5, np.nan, np.inf, -np.inf], dtype=np.float32)
    array = np.broadcast_to(values, (1, 3, 1, 8))
    assert list(np.asarray(array_to_image(array))[0, :, 0]) == [0, 0, 128, 255, 255, 0, 255, 0]
    with pytest.raises(ValueError, match=r"expected an RGB array .* got shape \(1, 4, 4\)"):
        array_to_image(np.zeros((1, 4, 4), dtype=np.float32))


def test_16_px_images_pass_the_minimum_side():
    data = encode_image(random_image(16, 16), "PNG")
    assert open_image(data, min_side=16).size == (16, 16)
    with pytest.raises(UserError, match="both sides must be at least 16 px"):
        open_image(encode_image(random_image(15, 40), "PNG"), min_side=16)


@pytest.mark.parametrize(("fmt", "magic"), [("JPEG", b"\xff\xd8"), ("PNG", b"\x89PNG"), ("webp", b"RIFF")])
def test_encode_image_in_each_format(fmt, magic):
    image = random_image(40, 24)
    data = encode_image(image, fmt, quality=80)
    assert data.startswith(magic) and open_image(data).size == (40, 24)
    if fmt == "PNG":  # lossless
        np.testing.assert_array_equal(np.asarray(open_image(data)), np.asarray(image))


def test_encode_quality_and_unknown_formats():
    image = random_image(64, 64)
    assert len(encode_image(image, "JPEG", quality=20)) < len(encode_image(image, "JPEG", quality=95))
    with pytest.raises(UserError, match="cannot encode images as 'GIF'; use one of JPEG, PNG, WEBP"):
        encode_image(image, "GIF")


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


@pytest.mark.parametrize("kind", [{"lossless": False}, {"lossless": True}, {"mode": "RGBA"}])
def test_a_webp_canvas_is_checked_before_pillow_opens_it(kind, monkeypatch, tmp_path):
    """Pillow's WebP decoder reserves the whole canvas on open: the header's size is checked first
    (VP8, VP8L and VP8X chunks, made here by a lossy, a lossless and an alpha image)."""
    buffer = io.BytesIO()
    Image.new(kind.get("mode", "RGB"), (300, 200), "teal").save(buffer, format="WEBP",
                                                                lossless=kind.get("lossless", False))
    data = buffer.getvalue()
    assert open_image(data).size == (300, 200)
    (tmp_path / "big.webp").write_bytes(data)
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("opened before the size check"))
    assert image_size(data) == (300, 200)  # the server's admission reads this before anything else
    for source in (data, tmp_path / "big.webp"):
        with pytest.raises(UserError, match="300x200 = 60000 pixels, above the limit of 59999"):
            open_image(source, max_pixels=59_999)


def test_decompression_bomb_warning_is_an_error_that_says_what_to_do(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)  # 200 px is above it but below Pillow's 2x error
    with pytest.raises(UserError, match="too large to decode safely .*resize it first"):
        open_image(png_bytes((20, 10)))


def _progressive_jpeg(extra_scans: int = 0, *, mpo: bool = False) -> bytes:
    """A progressive JPEG (or an MPO: a JPEG with an MPF header and a second image), its first image's
    last scan header repeated ``extra_scans`` times (empty scans) before that image's end."""
    buffer = io.BytesIO()
    frames = [Image.new("RGB", (64, 48), "teal"), Image.new("RGB", (64, 48), "olive")]
    frames[0].save(buffer, format="MPO" if mpo else "JPEG", progressive=True, save_all=mpo, append_images=frames[1:])
    data = buffer.getvalue()
    end = data.find(b"\xff\xd9")
    last = data.rfind(b"\xff\xda", 0, end)
    header = data[last:last + 2 + int.from_bytes(data[last + 2:last + 4], "big")]
    return data[:end] + header * extra_scans + data[end:]


def test_a_jpeg_of_thousands_of_scans_is_refused_before_decoding(tmp_path):
    assert open_image(_progressive_jpeg()).size == (64, 48)  # a normal progressive JPEG: ~10 scans
    many = _progressive_jpeg(extra_scans=5000)
    with pytest.raises(UserError, match="scans.*baseline JPEG or as PNG"):
        open_image(many)
    with pytest.raises(UserError, match="scans"):  # Pillow calls it MPO, libjpeg decodes it all the same
        open_image(_progressive_jpeg(extra_scans=5000, mpo=True))
    (tmp_path / "scans.jpg").write_bytes(many)
    with pytest.raises(UserError, match="scans.jpg is a JPEG of 50"):
        open_image(tmp_path / "scans.jpg")


def test_resize_max_side_only_shrinks():
    image = Image.new("RGB", (400, 200))
    assert resize_max_side(image, 100).size == (100, 50)
    assert resize_max_side(image, 1000).size == (400, 200)


def test_output_path_extension_checked_up_front(tmp_path):
    with pytest.raises(UserError, match="use one of"):
        check_output_path(tmp_path / "x.gif")


def test_an_output_path_that_cannot_be_written_is_refused_up_front(tmp_path):
    (tmp_path / "taken.png").mkdir()
    with pytest.raises(UserError, match="it is a folder"):
        check_output_path(tmp_path / "taken.png")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="not a folder this user can write to"):
        check_output_path(tmp_path / "file" / "sub" / "out.png")
    assert check_output_path(tmp_path / "new" / "deeper" / "out.png")  # folders still to make are fine


def test_save_image_makes_folders_and_a_failed_save_keeps_the_old_file(tmp_path):
    out = save_image(torch.rand(3, 8, 8), tmp_path / "a" / "b" / "out.jpg")
    old = out.read_bytes()
    with pytest.raises(UserError, match="could not write"):
        save_image(Image.new("RGBA", (8, 8)), out)  # JPEG has no alpha: Pillow fails part-way
    assert out.read_bytes() == old and [p.name for p in out.parent.iterdir()] == ["out.jpg"]


@pytest.mark.parametrize(("name", "largest"), [("out.webp", 16383), ("out.WEBP", 16383), ("out.jpg", 65500),
                                               ("out.jpeg", 65500)])
def test_an_image_too_large_for_the_output_format_is_refused_before_any_work(name, largest):
    check_output_size(name, (largest, 20))
    with pytest.raises(UserError, match=rf"cannot write {name}: the image would be 20x{largest + 1}, but "
                                        rf"\.(webp|jpe?g) files hold at most {largest} px a side; choose a \.png"):
        check_output_size(name, (20, largest + 1))
    check_output_size("out.png", (100_000, 20))  # PNG's limit is far beyond any image we decode


def test_save_image_refuses_a_webp_too_wide_and_turns_encoder_errors_into_user_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="at most 16383 px a side"):
        save_image(Image.new("RGB", (16500, 20)), tmp_path / "wide.webp")
    assert list(tmp_path.iterdir()) == []

    def fails(self, *args, **kwargs):
        raise ValueError("encoding error 5")

    monkeypatch.setattr(Image.Image, "save", fails)
    with pytest.raises(UserError, match=r"^could not write .*out.webp: encoding error 5; choose another path$"):
        save_image(Image.new("RGB", (8, 8)), tmp_path / "out.webp")
    assert list(tmp_path.iterdir()) == []


def test_check_photos_decodes_each_photo_so_a_truncated_one_is_found_up_front(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes((64, 48)))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(encode_image(random_image(64, 48), "JPEG")[:1200])  # the header is whole, the scan is not
    assert image_size(cut.read_bytes()) == (64, 48)
    check_photos([good], 32, min_side=16)
    with pytest.raises(UserError, match=r"cut.jpg could not be decoded: image file is truncated"):
        check_photos([good, cut], 32, min_side=16)


def test_exif_orientation_is_applied(tmp_path):
    """Phone photos are stored sideways with an EXIF Orientation tag; they must come out upright."""
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    upright = open_image(tmp_path / "phone.jpg")
    assert upright.size == (20, 40)
    top, bottom = np.asarray(upright)[5, 10], np.asarray(upright)[35, 10]
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # the left side is now on top


def test_16_bit_grayscale_png_matches_its_8_bit_version():
    import io

    from styletrain.images import open_image

    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (24, 1))
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")  # mode I;16
    decoded = np.asarray(open_image(buffer.getvalue()), dtype=np.float64)
    assert decoded.shape == (24, 64, 3)
    assert (decoded[..., 0] == np.floor(ramp / 257.0 + 0.5)).all()  # rounded to the nearest 8-bit level
    assert decoded[..., 0].mean() == pytest.approx(127.5, abs=1.0)  # not clipped to white


def test_a_jpeg_to_be_shrunk_is_decoded_at_a_reduced_scale_with_the_same_look():
    smooth = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(smooth).resize((640, 480), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
    reduced = open_image(buf.getvalue(), reduce_to=100)
    assert reduced.size == (160, 120)  # 1/4 scale: 1/8 would be below 100 px
    full = open_image(buf.getvalue())
    assert full.size == (640, 480)
    a, b = (np.asarray(resize_max_side(image, 100), dtype=float) for image in (reduced, full))
    assert a.shape == b.shape == (75, 100, 3) and np.abs(a - b).mean() < 2.0
    assert open_image(png_bytes((640, 480)), reduce_to=100).size == (640, 480)  # PNG has no reduced decode
    panorama = io.BytesIO()
    Image.fromarray(smooth).resize((1600, 400), Image.Resampling.BICUBIC).save(panorama, "JPEG", quality=90)
    assert open_image(panorama.getvalue(), reduce_short_to=100).size == (400, 100)  # the short side kept at 100
    assert open_image(panorama.getvalue(), reduce_to=400, reduce_short_to=100).size == (400, 100)
    assert open_image(panorama.getvalue(), reduce_to=800, reduce_short_to=100).size == (800, 200)  # both met
