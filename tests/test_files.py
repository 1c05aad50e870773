"""Writing output files whole: the old file survives a failed write, and no part file is left."""

import os

import pytest

from styletrain.errors import UserError
from styletrain.files import check_writable, write_atomically


def test_a_write_replaces_the_file_whole_with_a_normal_mode(tmp_path):
    out = write_atomically(tmp_path / "sub" / "model.onnx", lambda part: part.write_bytes(b"new"))
    assert out.read_bytes() == b"new" and list(out.parent.iterdir()) == [out]
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask  # readable by a server running as another user


def test_a_failed_write_keeps_the_old_file_and_leaves_no_part(tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old")

    def fails(part):
        part.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(out, fails)
    assert out.read_bytes() == b"old" and list(tmp_path.iterdir()) == [out]


def test_check_writable_refuses_folders_and_paths_under_files(tmp_path):
    with pytest.raises(UserError, match="it is a folder"):
        check_writable(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="not a folder this user can write to"):
        check_writable(tmp_path / "file" / "x.json")
    assert check_writable(tmp_path / "a" / "b" / "x.json") == tmp_path / "a" / "b" / "x.json"


def test_the_part_file_name_is_short_so_a_255_character_name_can_be_written(tmp_path):
    names = []

    def write(part):
        names.append(part.name)
        part.write_bytes(b"new")

    out = write_atomically(tmp_path / ("x" * 251 + ".png"), write)  # 255 characters: the usual NAME_MAX
    assert out.read_bytes() == b"new" and list(tmp_path.iterdir()) == [out]
    (part,) = names
    assert part.startswith(".") and part.endswith(".png") and len(part) == len(".12345678.png")
