"""argparse value types and options shared by the commands: bounded numbers, checked at parse time,
and the loss options with ``LossConfig``'s defaults."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from styletrain.loss_config import LossConfig


def _number(kind: type, accept: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


def positive(kind: type = int) -> Callable[[str], float]:
    """argparse type: a number greater than 0."""
    return _number(kind, lambda v: v > 0, "greater than 0")


def non_negative(kind: type = float) -> Callable[[str], float]:
    """argparse type: a number of at least 0."""
    return _number(kind, lambda v: v >= 0, "at least 0")


DURATION = re.compile(r"(\d+):(\d\d):(\d\d):(\d\d)")
"""Lightning's ``Timer`` duration, DD:HH:MM:SS (any number of days; the fields are not range-checked)."""


def duration(text: str) -> str:
    """argparse type: a time limit that Lightning's ``Timer`` reads, checked here rather than after loading VGG."""
    if not DURATION.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"expected DD:HH:MM:SS, e.g. 00:12:00:00 for 12 hours; got {text!r}")
    return text.strip()


def torch_device(text: str) -> str:
    """argparse type for ``--device``: cpu, cuda or cuda:N, refused before any work when this machine
    has no such device (torch is imported only for a GPU name)."""
    if text == "cpu":
        return text
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N; got {text!r}") from None
    if device.type != "cuda":
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N; got {text!r}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if (device.index or 0) >= count:
        raise argparse.ArgumentTypeError(f"{text} is not available here (this torch sees {count} CUDA "
                                         "device(s)); use --device cpu")
    return text


def add_loss_options(p: argparse.ArgumentParser) -> None:
    """The loss weights and layers, with ``LossConfig``'s defaults (read them with ``loss_settings``)."""
    defaults = LossConfig()
    p.add_argument("--content-weight", type=non_negative(), default=defaults.content_weight)
    p.add_argument("--style-weight", type=non_negative(), default=defaults.style_weight)
    p.add_argument("--tv-weight", type=non_negative(), default=defaults.tv_weight)
    p.add_argument("--content-layer", default=defaults.content_layer)
    p.add_argument("--style-layers", default=",".join(defaults.style_layers))


def style_layers(text: str) -> list[str]:
    """Comma-separated layer names (from the command line or a recipe) as a list."""
    return [name.strip() for name in text.split(",") if name.strip()]


def loss_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``LossConfig`` keywords given by ``add_loss_options``' options."""
    return {"content_layer": args.content_layer, "style_layers": style_layers(args.style_layers),
            "content_weight": args.content_weight, "style_weight": args.style_weight, "tv_weight": args.tv_weight}
