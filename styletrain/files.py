"""Writing output files whole: a failed or interrupted write never leaves half a file, and never
loses the file it was to replace (a server loading a folder of models never sees half of one)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from styletrain.errors import UserError


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(part)`` on a temporary file beside ``path``, then rename it to ``path``.

    Creates parent folders. The part file keeps ``path``'s suffix (Pillow picks the format by it) and
    gets a normal file's mode (``mkstemp`` makes files private)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
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
