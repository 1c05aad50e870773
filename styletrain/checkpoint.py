"""Reading trained nets back from checkpoints, without Lightning or the VGG weights.

A styletrain checkpoint is a Lightning checkpoint (or a slim copy of one) whose ``"styletrain"``
entry holds the metadata: format version, style names, net config, loss and training settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from styletrain.errors import UserError
from styletrain.transformer import TransformerNet

FORMAT_VERSION = 1
NET_PREFIX = "net."


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a styletrain checkpoint dict, with a clear error for missing or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"could not read checkpoint {path}: {exc.__class__.__name__}: {exc}") from None
    meta = ckpt.get("styletrain") if isinstance(ckpt, dict) else None
    if not meta:
        raise UserError(f"{path} is not a styletrain checkpoint (no 'styletrain' metadata)")
    if meta.get("version", 0) > FORMAT_VERSION:
        raise UserError(f"{path} has checkpoint format {meta['version']}; upgrade styletrain to read it")
    return ckpt


def load_transformer(path: str | Path) -> tuple[TransformerNet, dict[str, Any]]:
    """The trained ``TransformerNet`` (eval mode, CPU) and its metadata from a checkpoint."""
    ckpt = read_checkpoint(path)
    meta = ckpt["styletrain"]
    net = TransformerNet(**meta["net"])
    state = {k[len(NET_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(NET_PREFIX)}
    net.load_state_dict(state)
    return net.eval(), meta


def save_slim(path: str | Path, out: str | Path) -> Path:
    """Write a copy of a checkpoint with only the net weights and metadata (no optimizer state)."""
    ckpt = read_checkpoint(path)
    slim = {
        "styletrain": ckpt["styletrain"],
        "state_dict": {k: v for k, v in ckpt["state_dict"].items() if k.startswith(NET_PREFIX)},
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, out)
    return out
