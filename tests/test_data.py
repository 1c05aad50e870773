"""The content-photo data module."""

import pytest
from PIL import Image

from styletrain import data
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


def test_a_large_photo_is_decoded_at_a_reduced_scale_for_its_crop(tmp_path, monkeypatch):
    """A folder of phone photos must not decode and resize every 12 Mpx photo in full each step."""
    Image.new("RGB", (2000, 1500), (200, 40, 10)).save(tmp_path / "big.jpg")
    decoded = []
    resize = data.resize_short_side
    monkeypatch.setattr(data, "resize_short_side", lambda image, side: decoded.append(image.size) or
                        resize(image, side))
    crop = PhotoDataset([tmp_path / "big.jpg"], 64)[0]
    assert crop.shape == (3, 64, 64) and abs(float(crop[0].mean()) - 200 / 255) < 0.02
    assert decoded == [(250, 188)]  # decoded at 1/8 scale: the short side still covers the 64 px crop


def test_a_folder_of_unreadable_photos_is_refused_before_any_worker_starts(tmp_path):
    """Found in a DataLoader worker, the error would reach the user inside torch's traceback."""
    for i in range(6):
        (tmp_path / f"p{i}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"none of the 4 training photos in .* could be read \(the first: .*p\d.jpg"):
        PhotoDataModule(str(tmp_path), image_size=32, num_workers=2, val_count=2)


def test_photos_too_large_for_the_device_are_refused_before_they_are_decoded(tmp_path, monkeypatch):
    from styletrain.data import DeviceBatches, held_bytes

    files = [tmp_path / f"p{i}.png" for i in range(3)]
    for i, path in enumerate(files):
        Image.new("RGB", (60 + 7 * i, 40)).save(path)
    held = sum(photo.numel() for photo in DeviceBatches(files, 32, batch_size=2).photos)
    assert held_bytes(files, 32) == held  # the estimate from the headers is what decoding them holds
    assert held_bytes(files, 32, sample=1) == pytest.approx(held, rel=0.15)
    monkeypatch.setattr(data, "header_size", lambda encoded: (0, 40))  # a corrupt header: left out, no crash
    assert held_bytes(files, 32) == 0
    monkeypatch.undo()
    monkeypatch.setattr(data, "free_memory", lambda device: 2 * held - 1)
    monkeypatch.setattr(data, "open_image", lambda *a, **kw: pytest.fail("decoded a photo"))
    with pytest.raises(UserError, match="--data-on-device would hold 3 photos at 32 px .* leave --data-on-device off"):
        DeviceBatches(files, 32, batch_size=2)


def test_too_few_photos_for_validation(tmp_path):
    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    with pytest.raises(UserError, match="need more than"):
        PhotoDataModule(str(tmp_path), val_count=4)


def test_device_batches_are_random_crops_and_flips_of_the_photos(tmp_path):
    import torch

    from styletrain.data import DeviceBatches

    # one photo whose columns are all different, so a crop's position and a flip can be read back
    ramp = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize((64, 40)).convert("RGB")
    ramp.save(tmp_path / "ramp.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    batches = DeviceBatches([tmp_path / "broken.jpg", tmp_path / "ramp.png"], 32, batch_size=6, seed=1)
    assert len(batches.photos) == 1 and batches.photos[0].shape == (3, 32, 51)  # short side scaled to 32
    seen = set()
    for batch, _ in zip(batches, range(5)):
        assert batch.shape == (6, 3, 32, 32) and batch.dtype == torch.float32
        assert 0.0 <= float(batch.min()) and float(batch.max()) <= 1.0
        for crop in batch:
            row = crop[0, 0]
            seen.add("flipped" if row[0] > row[-1] else "kept")
    assert seen == {"flipped", "kept"}


def test_data_module_on_device_feeds_endless_batches(tmp_path):
    for i in range(6):
        Image.new("RGB", (50 + i, 40), (i * 40, 0, 0)).save(tmp_path / f"p{i}.png")
    dm = PhotoDataModule(str(tmp_path), image_size=32, batch_size=3, num_workers=0, val_count=2, on_device=True)
    loader = iter(dm.train_dataloader())
    assert [next(loader).shape for _ in range(3)] == [(3, 3, 32, 32)] * 3
