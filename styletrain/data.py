"""Content photos for training: a folder of images, random crops and flips, a held-out split."""

from __future__ import annotations

import logging
import math
import random
import statistics
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torchvision.transforms import v2

from styletrain.errors import UserError
from styletrain.images import FORMATS, open_image, resize_short_side, short_side_size, to_tensor
from styletrain.images import image_size as header_size

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def list_images(folder: str | Path, *, option: str = "--content-dir") -> list[Path]:
    """Image files directly in ``folder`` (sorted), or a ``UserError`` naming the command-line
    ``option`` to fix if the folder is missing or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"photo folder not found: {folder}; point {option} at a folder of photos")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"no {'/'.join(FORMATS)} images in {folder}; point {option} at a folder of photos")
    return files


def check_readable(files: Sequence[Path], image_size: int, *, what: str) -> None:
    """Refuse, in this process, photos none of which can be read: found in a DataLoader worker, the error
    would reach the user wrapped in torch's traceback. Decodes photos until one reads (usually one)."""
    first_error = None
    for path in files:
        try:
            open_image(path, reduce_short_to=image_size)
            return
        except UserError as exc:
            first_error = first_error or exc
    raise UserError(f"none of the {len(files)} {what} could be read (the first: {first_error}); re-save or "
                    "remove the unreadable photos, or point --content-dir at a folder of JPEG/PNG/WEBP photos")


def held_bytes(files: Sequence[Path], image_size: int, *, sample: int = 64) -> int:
    """About how many bytes ``DeviceBatches`` holds for ``files`` (uint8 RGB, short side ``image_size``),
    from the headers of up to ``sample`` of them, so a folder too large for the device is refused
    before it is decoded. Unreadable photos are left out of the estimate, as the dataset skips them."""
    held = []
    for path in random.Random(0).sample(list(files), min(sample, len(files))):
        try:
            width, height = header_size(Path(path).read_bytes())
        except (OSError, UserError):
            continue
        if min(width, height) < 1:  # a corrupt header; the dataset skips such a file
            continue
        held.append(3 * math.prod(short_side_size((width, height), image_size)))
    return round(len(files) * statistics.fmean(held)) if held else 0


def free_memory(device: torch.device) -> int | None:
    """Bytes free on a CUDA ``device``; ``None`` elsewhere (host memory is not checked)."""
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None


class PhotoDataset(Dataset):
    """Photos resized so the short side is ``image_size``, then cropped to a square.

    Training crops are random with random horizontal flips; validation crops are central. A large
    JPEG is decoded at a reduced scale and resized as 8-bit pixels (as ``DeviceBatches`` does), so a
    folder of phone photos does not decode and resize 12 Mpx in float every step. An unreadable
    photo is skipped with a warning (a neighbour is returned) rather than ending a run.
    """

    def __init__(self, files: Sequence[Path], image_size: int, *, train: bool = True) -> None:
        self.files = list(files)
        self.image_size = image_size
        crop = v2.RandomCrop(image_size) if train else v2.CenterCrop(image_size)
        flip = [v2.RandomHorizontalFlip()] if train else []
        self.transform = v2.Compose([crop, *flip])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tensor:
        for offset in range(len(self.files)):
            path = self.files[(index + offset) % len(self.files)]
            try:
                image = resize_short_side(open_image(path, reduce_short_to=self.image_size), self.image_size)
                return self.transform(to_tensor(image)[0])
            except UserError as exc:
                log.warning("skipping %s", exc)
        raise UserError("none of the content photos could be read")


class DeviceBatches(IterableDataset):
    """Endless training batches cut on the training device from photos decoded once.

    Every photo is read once, resized so its short side is ``image_size`` and kept as uint8 on
    ``device``; each batch is random photos, random square crops and random flips done there, so a
    GPU never waits for JPEG decoding (same augmentation as ``PhotoDataset``). ``seed`` should differ
    per process under DDP. Unreadable photos are skipped with a warning. Photos that would take more
    than half of a CUDA device's free memory are refused before any is decoded (``held_bytes``).
    """

    def __init__(self, files: Sequence[Path], image_size: int, batch_size: int, *,
                 device: str | torch.device = "cpu", seed: int = 0) -> None:
        self.image_size, self.batch_size, self.seed = image_size, batch_size, seed
        self.device = torch.device(device)
        free = free_memory(self.device)
        # the other half is for training itself
        if free is not None and (estimate := held_bytes(files, image_size)) > free / 2:
            raise UserError(
                f"--data-on-device would hold {len(files)} photos at {image_size} px in about {estimate / 1e9:.1f} "
                f"GB on {self.device}, more than half of its {free / 1e9:.1f} GB free (the rest is for training); "
                "leave --data-on-device off (DataLoader workers then decode the photos every step), or "
                "train on fewer photos")
        self.photos: list[Tensor] = []
        for path in files:
            try:
                image = resize_short_side(open_image(path, reduce_short_to=image_size), image_size)
            except UserError as exc:
                log.warning("skipping %s", exc)
                continue
            array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
            self.photos.append(array.to(self.device))
        if not self.photos:
            raise UserError("none of the content photos could be read")
        log.info("holding %d photos on %s (%.0f MB)", len(self.photos), self.device,
                 sum(p.numel() for p in self.photos) / 1e6)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        size = self.image_size
        while True:
            picks = torch.randint(len(self.photos), (self.batch_size,), generator=generator).tolist()
            crops = []
            for index in picks:
                photo = self.photos[index]
                top = int(torch.randint(photo.shape[1] - size + 1, (), generator=generator))
                left = int(torch.randint(photo.shape[2] - size + 1, (), generator=generator))
                crop = photo[:, top:top + size, left:left + size]
                crops.append(crop.flip(-1) if torch.rand((), generator=generator) < 0.5 else crop)
            yield torch.stack(crops).float().div_(255.0)


class PhotoDataModule(L.LightningDataModule):
    """A folder of content photos split into training and a few fixed validation photos.

    ``on_device``: decode the training photos once and cut batches on the training device
    (``DeviceBatches``) instead of decoding in DataLoader workers every step.
    """

    def __init__(self, content_dir: str, image_size: int = 256, batch_size: int = 4,
                 num_workers: int = 2, val_count: int = 4, seed: int = 0, on_device: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.files = list_images(content_dir)
        if len(self.files) <= val_count:
            raise UserError(
                f"{content_dir} holds {len(self.files)} photos; need more than the {val_count} held out for validation"
            )
        shuffled = random.Random(seed).sample(self.files, len(self.files))
        self.val_files, self.train_files = sorted(shuffled[:val_count]), shuffled[val_count:]
        check_readable(self.train_files, image_size, what=f"training photos in {content_dir}")
        check_readable(self.val_files, image_size, what=f"photos held out for validation in {content_dir}")

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=shuffle,
                          num_workers=workers, persistent_workers=workers > 0,
                          drop_last=shuffle and len(dataset) >= self.hparams.batch_size,
                          pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        if hp.on_device:  # batches are made on the device by the dataset itself
            trainer = self.trainer
            rank, step = (trainer.global_rank, trainer.global_step) if trainer is not None else (0, 0)
            device = trainer.strategy.root_device if trainer is not None else "cpu"
            # seeded by the step too, so a resumed attempt goes on to new crops instead of replaying the first's
            batches = DeviceBatches(self.train_files, hp.image_size, hp.batch_size, device=device,
                                    seed=hp.seed + 1000 * rank + 7919 * step)
            return DataLoader(batches, batch_size=None, num_workers=0)
        return self._loader(PhotoDataset(self.train_files, hp.image_size), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(PhotoDataset(self.val_files, self.hparams.image_size, train=False), shuffle=False)
