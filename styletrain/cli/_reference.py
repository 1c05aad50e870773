"""Options and helpers shared by the reference and diagnostics commands (gatys, texture, ...)."""

from __future__ import annotations

import argparse
from pathlib import Path

from styletrain.cli._args import non_negative, positive, torch_device  # noqa: F401  (re-exported for the commands)


def add_common(p: argparse.ArgumentParser, *, output_help: str = "output image (.png/.jpg/.webp)") -> None:
    p.add_argument("--output", required=True, metavar="IMG", help=output_help)
    p.add_argument("--vgg-weights", metavar="PATH", help="VGG weights file (default: $STYLETRAIN_VGG_WEIGHTS, "
                   "else torchvision's ImageNet weights)")
    p.add_argument("--seed", type=int, default=0, help="seed for noise and jitter (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--device", type=torch_device, default="cpu", help="torch device, e.g. cuda (default cpu)")


def floats(text: str) -> list[float]:
    """argparse type: comma-separated numbers."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def ints(text: str) -> list[int]:
    """argparse type: comma-separated integers."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def load_image(path: str | Path, size: int | None):
    """An input image as a (1, 3, H, W) tensor, its longer side shrunk to ``size``."""
    from styletrain.images import load_tensor
    from styletrain.metadata import MIN_SIDE

    return load_tensor(path, max_side=size, min_side=MIN_SIDE, option="--size")


def save(image, path: str | Path) -> None:
    from styletrain.images import save_image

    save_image(image, path)
    print(f"wrote {path}")

