"""Image decode, encode, and the one conversion between PIL images and [0, 1] RGB arrays.

Every image that enters styletrain (CLI, training data, the gRPC server) goes through
``open_image``: formats are restricted, the pixel count is checked from the header before decoding,
and Pillow's decompression-bomb warning is an error. ``image_to_array`` / ``array_to_image`` are
the only PIL <-> pixel conversion (torch-free, for the server); ``to_tensor`` / ``to_pil`` wrap them.
``pixels_to_array`` / ``array_to_pixels`` do the same between uint8 (H, W, 3) arrays and floats, one
conversion each way, for tiles and for the server's uint8 path.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

from styletrain.errors import UserError
from styletrain.files import check_writable, write_atomically

if TYPE_CHECKING:  # torch is imported where tensors are made, so the server can decode without it
    from torch import Tensor

FORMATS = ("JPEG", "PNG", "WEBP")
DEFAULT_MAX_PIXELS = 64_000_000
"""Largest image (width x height) read by default: about 8000 x 8000."""
MAX_JPEG_SCANS = 100
"""Most start-of-scan markers a JPEG may hold. A progressive JPEG has about 10 (libjpeg's default),
but every scan is decoded over the whole image: 1000 empty 14-byte scans added 0.26 s to a 2000 x 2000
decode (``benchmarks/bench_large_images.py --only scans``, 2-core EPYC), so a 32 MiB request of them
would hold a core for about ten minutes, and no deadline can interrupt a decode."""


def open_image(
    source: str | Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = 1,
    formats: tuple[str, ...] = FORMATS,
    reduce_to: int | None = None,
    reduce_short_to: int | None = None,
) -> Image.Image:
    """Decode a JPEG/PNG/WebP file or bytes into an RGB image, applying EXIF orientation.

    ``reduce_to``: the caller shrinks the image to this longer side next (``resize_max_side``), so a
    JPEG may be decoded at 1/2, 1/4 or 1/8 scale while its longer side stays at least that: a
    12 Mpx photo for 1024 px decodes in a third of the time (``benchmarks/bench_large_images.py``;
    the result differs from a full decode by about 1/255 on average). ``reduce_short_to``: the same for
    a caller that shrinks the shorter side to this next (``resize_short_side``). Raises ``UserError`` for
    missing, unreadable, corrupt, too large or too small images.
    """
    name = "image bytes" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise UserError(f"image not found: {name}")
    data = source if isinstance(source, bytes) else _read(Path(source))  # read once: header checks, then decode
    canvas = _webp_size(data) if "WEBP" in formats else None
    if canvas is not None and canvas[0] * canvas[1] > max_pixels:  # before Pillow reserves the canvas
        raise UserError(f"{name} is {canvas[0]}x{canvas[1]} = {canvas[0] * canvas[1]} pixels, above the limit "
                        f"of {max_pixels}; resize it first")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=formats) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UserError(
                        f"{name} is {width}x{height} = {width * height} pixels, above the limit of "
                        f"{max_pixels}; resize it first"
                    )
                if min(width, height) < min_side:
                    raise UserError(f"{name} is {width}x{height}; both sides must be at least {min_side} px")
                jpeg = isinstance(image, JpegImageFile)  # MPO (a JPEG with an MPF header) included
                if jpeg:
                    _check_scans(data, name)
                scales = [side / edge for side, edge in ((reduce_to, max(width, height)),
                                                         (reduce_short_to, min(width, height))) if side]
                if jpeg and scales and max(scales) < 1:
                    scale = max(scales)  # the smaller reduction, so that both sides asked for are met
                    image.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
                image.load()
                return _to_rgb(ImageOps.exif_transpose(image))
    except UserError:
        raise
    except UnidentifiedImageError:
        raise UserError(f"{name} is not a readable {'/'.join(formats)} image") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        # Pillow refuses from the header alone, before our own limit: say so the way ours does
        raise UserError(f"{name} is too large to decode safely ({exc}); resize it first") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{name} could not be decoded: {exc}") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a WebP file's first 30 bytes (VP8X, VP8 or VP8L chunk), else None. Read
    before Pillow opens the file, since its WebP decoder reserves memory for the whole canvas at once."""
    head = data[:30]
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    chunk = head[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if chunk == b"VP8 ":
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + (bits >> 14 & 0x3FFF)
    return None


def _check_scans(data: bytes, name: str) -> None:
    """Refuse a JPEG of more than ``MAX_JPEG_SCANS`` scans before decoding it. Counts every 0xFFDA:
    the entropy-coded data cannot hold one, and metadata holds few if any."""
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise UserError(f"{name} is a JPEG of {scans} scans, more than the {MAX_JPEG_SCANS} allowed (a progressive "
                        "JPEG has about 10); save it again as a baseline JPEG or as PNG")


def image_size(data: bytes, *, formats: tuple[str, ...] = FORMATS) -> tuple[int, int]:
    """(width, height) from an encoded image's header, without decoding it; ``UserError`` if unreadable.
    Callers check the size themselves, so Pillow's decompression-bomb warning is not printed, and a
    WebP's is read from its header without Pillow (which reserves the whole canvas on open)."""
    canvas = _webp_size(data) if "WEBP" in formats else None
    if canvas is not None:
        return canvas
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=formats) as image:
                return image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"image bytes are not a readable {'/'.join(formats)} image: {exc}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with 16/32-bit grayscale scaled down to 8 bits (Pillow's own conversion clips it to white)."""
    if image.mode.startswith("I"):  # I, I;16, I;16B, ...: one integer channel, 16-bit from PNGs
        # round(level / 257) in integers, in place: float64 copies held 24 bytes a pixel at the peak
        levels = np.clip(np.asarray(image, dtype=np.int32), 0, 65535)
        levels += 128
        levels //= 257
        image = Image.fromarray(levels.astype(np.uint8), "L")
    return image.convert("RGB")


def check_photos(paths: Iterable[str | Path], max_side: int | None, *, min_side: int = 1,
                 option: str = "max_side") -> None:
    """Refuse, before any long work over them, a photo that is unreadable, corrupt or under ``min_side``,
    as it is or once shrunk to ``max_side``: found part-way, it would cost the results before it. Each
    file's header is checked, then the file is decoded whole (a truncated JPEG passes the header check),
    at a reduced scale where ``max_side`` allows."""
    for path in paths:
        try:
            width, height = shrunk_size(image_size(Path(path).read_bytes()), max_side, min_side=min_side,
                                        option=option)
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None
        if min(width, height) < min_side:
            raise UserError(f"{path} is {width}x{height}; both sides must be at least {min_side} px")
        open_image(path, reduce_to=max_side)  # its errors name the file


def shrunk_size(size: tuple[int, int], max_side: int | None, *, min_side: int = 1,
                option: str = "max_side") -> tuple[int, int]:
    """(width, height) once shrunk (never enlarged) so the longer side is at most ``max_side``, keeping
    the aspect ratio; ``UserError``, naming the ``option`` that set ``max_side``, if the shorter side
    would then be under ``min_side``."""
    width, height = size
    if max_side is None or max(size) <= max_side:
        return size
    scale = max_side / max(size)
    shrunk = (max(1, round(width * scale)), max(1, round(height * scale)))
    if min(shrunk) < min_side:
        needed = math.ceil(min_side * max(size) / min(size))
        keep = ", or leave it unset (0 over gRPC) to keep the size" if option == "max_side" else ""
        raise UserError(f"{option} {max_side} shrinks the {width}x{height} image to {shrunk[0]}x{shrunk[1]}, "
                        f"but both sides must be at least {min_side} px; use a {option} of at least {needed}{keep}")
    return shrunk


def resize_max_side(image: Image.Image, max_side: int | None, *, min_side: int = 1,
                    option: str = "max_side") -> Image.Image:
    """Shrink (never enlarge) so the longer side is at most ``max_side`` (``shrunk_size``)."""
    size = shrunk_size(image.size, max_side, min_side=min_side, option=option)
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


def short_side_size(size: tuple[int, int], side: int) -> tuple[int, int]:
    """(width, height) scaled so the shorter side is exactly ``side``, keeping the aspect ratio."""
    scale = side / min(size)
    return max(side, round(size[0] * scale)), max(side, round(size[1] * scale))


def resize_short_side(image: Image.Image, side: int) -> Image.Image:
    """Resize so the shorter side is exactly ``side`` (how training photos are scaled before cropping)."""
    return image.resize(short_side_size(image.size, side), Image.Resampling.LANCZOS)


def resize_side(image: Image.Image, side: int) -> Image.Image:
    """Resize so the longer side is exactly ``side`` (the scale at which a style image is read)."""
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def image_to_array(image: Image.Image) -> np.ndarray:
    """PIL image -> float32 (1, 3, H, W) RGB in [0, 1]: the layout every model takes."""
    return pixels_to_array(np.asarray(image.convert("RGB")))


def pixels_to_array(pixels: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> float32 (1, 3, H, W) in [0, 1], converted once (no float temporaries)."""
    out = np.empty((1, 3, *pixels.shape[:2]), dtype=np.float32)
    np.divide(pixels.transpose(2, 0, 1), np.float32(255.0), out=out[0])
    return out


def array_to_image(array: np.ndarray) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) float in [0, 1] -> PIL RGB; values clamped and NaN -> 0, so none wrap."""
    return Image.fromarray(array_to_pixels(array))


def array_to_pixels(array: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) float in [0, 1] -> uint8 (H, W, 3), written into ``out`` if given.

    Values are clamped and NaN -> 0, so none wrap; ``array`` is not modified (one float copy is made).
    """
    if array.ndim == 4:
        array = array[0]
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"expected an RGB array (1, 3, H, W) or (3, H, W); got shape {array.shape}")
    values = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)  # a copy: the caller's array stays as it was
    np.clip(values, 0.0, 1.0, out=values)
    values *= 255.0
    values += 0.5
    if out is None:
        out = np.empty((*array.shape[1:], 3), dtype=np.uint8)
    out[...] = values.transpose(1, 2, 0)  # truncates, as astype(uint8) does
    return out


def encode_image(image: Image.Image, format: str = "JPEG", quality: int = 90) -> bytes:
    """Encode as JPEG, PNG or WebP bytes; ``quality`` (1-100) applies to JPEG and WebP."""
    if format.upper() not in FORMATS:
        raise UserError(f"cannot encode images as {format!r}; use one of {', '.join(FORMATS)}")
    buffer = io.BytesIO()
    image.save(buffer, format=format.upper(), quality=quality)
    return buffer.getvalue()


def warm_up_codecs(formats: tuple[str, ...] = FORMATS) -> None:
    """Encode and decode a small image in every format: Pillow loads its plugins on first use."""
    image = Image.new("RGB", (32, 32), (128, 128, 128))
    for format_name in formats:
        open_image(encode_image(image, format_name), formats=formats)


def to_tensor(image: Image.Image) -> Tensor:
    """PIL RGB image -> float tensor (1, 3, H, W) in [0, 1] (``image_to_array`` as a tensor)."""
    import torch

    return torch.from_numpy(image_to_array(image))


def to_pil(tensor: Tensor) -> Image.Image:
    """Tensor (1, 3, H, W) or (3, H, W) in [0, 1] -> PIL RGB image (``array_to_image``: clamped, NaN -> 0)."""
    return array_to_image(tensor.detach().float().cpu().numpy())


def load_tensor(path: str | Path, *, max_side: int | None = None, min_side: int = 1, option: str = "max_side",
                **kwargs: object) -> Tensor:
    """Read an image file as a (1, 3, H, W) tensor, shrunk to ``max_side`` if given; ``UserError`` if a
    side is under ``min_side``, as read or once shrunk (``option``: the setting to name then)."""
    image = open_image(path, min_side=min_side, **kwargs)
    return to_tensor(resize_max_side(image, max_side, min_side=min_side, option=option))


OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def check_output_path(path: str | Path) -> Path:
    """Fail before any work is done if an output image path has an unsupported extension, names a
    folder, or lies where no file can be written (its nearest existing folder is not writable)."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UserError(f"cannot write {path}: use one of {', '.join(OUTPUT_SUFFIXES)}")
    return check_writable(path)


MAX_OUTPUT_SIDE = {".jpg": 65_500, ".jpeg": 65_500, ".webp": 16_383}
"""Longest side each output format can store (libjpeg's and libwebp's limits); PNG has none that matters."""


def check_output_size(path: str | Path, size: tuple[int, int]) -> None:
    """Fail before any work is done if an image of ``size`` (width, height) is too large for the format
    of ``path``: the encoder would fail only once the work is done."""
    limit = MAX_OUTPUT_SIDE.get(Path(path).suffix.lower())
    if limit is not None and max(size) > limit:
        raise UserError(f"cannot write {path}: the image would be {size[0]}x{size[1]}, but "
                        f"{Path(path).suffix.lower()} files hold at most {limit} px a side; choose a .png "
                        "output or a smaller image")


def save_image(image: Tensor | Image.Image, path: str | Path, *, quality: int = 95) -> Path:
    """Write a tensor or PIL image; the format follows the file extension. Creates parent folders,
    and replaces an existing file only once the new one is complete."""
    path = check_output_path(path)
    pil = image if isinstance(image, Image.Image) else to_pil(image)
    check_output_size(path, pil.size)  # before the encoder, which fails late (libjpeg also prints to stderr)
    try:
        return write_atomically(path, lambda part: pil.save(part, quality=quality))
    except (OSError, ValueError) as exc:  # Pillow's encoders raise both
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UserError(f"could not write {path}: {reason}; choose another path") from None
