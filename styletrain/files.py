"""Files in and out: output files are written whole (a failed or interrupted write never leaves half a
file, nor loses the file it was to replace), and a file given in the wrong place is named for what it is."""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path

from styletrain.errors import UserError


MAX_PART_SUFFIX = 16
"""Longest suffix a part file keeps (image suffixes are 4-5 characters), so its name stays short."""


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(part)`` on a temporary file beside ``path``, then rename it to ``path``.

    Creates parent folders. The part file is named "." + 8 random characters + ``path``'s suffix (Pillow
    picks the format by it), short so that an output name near the 255-byte limit still works, and
    gets a normal file's mode (``mkstemp`` makes files private)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if len(path.suffix) <= MAX_PART_SUFFIX else ""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=suffix)
    os.close(fd)
    part = Path(name)
    try:
        write(part)
        part.chmod(0o666 & ~_umask())
        part.replace(path)
    finally:
        part.unlink(missing_ok=True)
    return path


def check_writable(path: str | Path) -> Path:
    """Fail before any work is done if ``path`` names a folder, or lies where no file can be written
    (its nearest existing folder is not one this user can write to)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder; give a file name in it")
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: {folder} is not a folder this user can write to; choose another path")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
"""First bytes of a ``torch.save`` file: a zip archive, or (the format before torch 1.6) a pickle."""
IMAGE_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF8": "GIF", b"BM": "BMP"}


def file_kind(path: Path) -> str:
    """What a file holds, by its first bytes (and an ``.onnx`` name): "a PyTorch checkpoint", "an ONNX
    model", "a JPEG image", ... or "" when unknown, so that a file passed in the wrong place is named
    rather than misread."""
    with open(path, "rb") as f:
        head = f.read(12)
    if head.startswith(TORCH_MAGIC):
        return "a PyTorch checkpoint"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WEBP image"
    for magic, name in IMAGE_MAGIC.items():
        if head.startswith(magic):
            return f"a {name} image"
    if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":  # ModelProto field 1 (ir_version) comes first
        return "an ONNX model"
    return ""


def torch_load_error(path: Path, exc: Exception, what: str, fix: str) -> UserError:
    """Why ``torch.load(path, weights_only=True)`` failed, in words, ending with ``fix``: a file of another
    kind is named (an ONNX model, a photo); a PyTorch file holding more than tensors and plain data is
    refused without passing on torch's advice to load it unsafely (that could run code)."""
    kind = file_kind(path)
    if not kind:
        return UserError(f"{path} is not a PyTorch checkpoint: {fix}")
    if kind != "a PyTorch checkpoint":
        return UserError(f"{path} is {kind}, not {what}: {fix}")
    if isinstance(exc, pickle.UnpicklingError):
        return UserError(f"{path} holds Python objects beyond tensors and plain data, which styletrain refuses to "
                         f"load (loading them could run code): {fix}")
    return UserError(f"could not read {what} from {path}: {exc.__class__.__name__}: {exc}")
