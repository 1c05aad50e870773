"""The content-photo data module."""

import pytest
from PIL import Image

from styletrain.data import PhotoDataModule, PhotoDataset, list_images
from styletrain.errors import UserError


def test_empty_or_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no JPEG/PNG/WEBP images"):
        list_images(tmp_path)
    with pytest.raises(UserError, match="photo folder not found: .*; point --content-dir at a folder of photos"):
        list_images(tmp_path / "nope")


def test_crops_split_and_skips_unreadable_photos(tmp_path):
    for i in range(5):
        Image.new("RGB", (60 + i, 40), (i, 0, 0)).save(tmp_path / f"p{i}.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    dm = PhotoDataModule(str(tmp_path), image_size=32, batch_size=2, num_workers=0, val_count=2)
    assert len(dm.val_files) == 2 and len(dm.train_files) == 4
    assert set(dm.val_files).isdisjoint(dm.train_files)
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (2, 3, 32, 32)
    broken = PhotoDataset([tmp_path / "broken.jpg", tmp_path / "p0.jpg"], 32)
    assert broken[0].shape == (3, 32, 32)


def test_too_few_photos_for_validation(tmp_path):
    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    with pytest.raises(UserError, match="need more than"):
        PhotoDataModule(str(tmp_path), val_count=4)
