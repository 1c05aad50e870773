"""Content photos for training: a folder of images, random crops and flips, a held-out split."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from styletrain.errors import UserError
from styletrain.images import FORMATS, open_image, to_tensor

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


class PhotoDataset(Dataset):
    """Photos resized so the short side is ``image_size``, then cropped to a square.

    Training crops are random with random horizontal flips; validation crops are central. An
    unreadable photo is skipped with a warning (a neighbour is returned) rather than ending a run.
    """

    def __init__(self, files: Sequence[Path], image_size: int, *, train: bool = True) -> None:
        self.files = list(files)
        crop = v2.RandomCrop(image_size) if train else v2.CenterCrop(image_size)
        flip = [v2.RandomHorizontalFlip()] if train else []
        self.transform = v2.Compose([v2.Resize(image_size, antialias=True), crop, *flip])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tensor:
        for offset in range(len(self.files)):
            path = self.files[(index + offset) % len(self.files)]
            try:
                return self.transform(to_tensor(open_image(path))[0])
            except UserError as exc:
                log.warning("skipping %s", exc)
        raise UserError("none of the content photos could be read")


class PhotoDataModule(L.LightningDataModule):
    """A folder of content photos split into training and a few fixed validation photos."""

    def __init__(self, content_dir: str, image_size: int = 256, batch_size: int = 4,
                 num_workers: int = 2, val_count: int = 4, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.files = list_images(content_dir)
        if len(self.files) <= val_count:
            raise UserError(
                f"{content_dir} holds {len(self.files)} photos; need more than the {val_count} held out for validation"
            )
        shuffled = random.Random(seed).sample(self.files, len(self.files))
        self.val_files, self.train_files = sorted(shuffled[:val_count]), shuffled[val_count:]

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=shuffle,
                          num_workers=workers, persistent_workers=workers > 0,
                          drop_last=shuffle and len(dataset) >= self.hparams.batch_size,
                          pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader(PhotoDataset(self.train_files, self.hparams.image_size), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(PhotoDataset(self.val_files, self.hparams.image_size, train=False), shuffle=False)
