"""Reading trained nets back from checkpoints, without Lightning or the VGG weights.

A styletrain checkpoint is a Lightning checkpoint (or a slim copy of one) whose ``"styletrain"``
entry holds the metadata (``styletrain.metadata.ModelMetadata``): format version, style names, net
config, loss and training settings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from styletrain.errors import UserError
from styletrain.files import torch_load_error
from styletrain.metadata import FORMAT_VERSION, ModelMetadata
from styletrain.transformer import TransformerNet

__all__ = ["FORMAT_VERSION", "NET_PREFIX", "load_transformer", "read_checkpoint", "save_slim", "save_transformer"]

NET_PREFIX = "net."


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a styletrain checkpoint dict, with a clear error for missing, foreign or too new files."""
    return _read(path)[0]


def load_transformer(path: str | Path) -> tuple[TransformerNet, ModelMetadata]:
    """The trained ``TransformerNet`` (eval mode, CPU) and its metadata from a checkpoint."""
    ckpt, meta = _read(path)
    net = TransformerNet(**meta.net)
    state = {k[len(NET_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(NET_PREFIX)}
    net.load_state_dict(state)
    return net.eval(), meta


def _read(path: str | Path) -> tuple[dict[str, Any], ModelMetadata]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise torch_load_error(path, exc, "a checkpoint", "pass a .ckpt (styletrain train writes one)") from None
    stored = ckpt.get("styletrain") if isinstance(ckpt, dict) else None
    if not stored:
        raise UserError(f"{path} is not a styletrain checkpoint (no 'styletrain' metadata)")
    try:
        return ckpt, ModelMetadata.from_dict(stored)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def save_transformer(net: TransformerNet, metadata: ModelMetadata, out: str | Path, *,
                     dtype: torch.dtype = torch.float32) -> Path:
    """Write a slim checkpoint: net weights and metadata only (no optimizer state).

    The net config and format version in ``metadata`` are replaced by the net's own and the current one.
    ``dtype=torch.float16`` halves the file (weights load back as float32; the rounding is ~1e-3 relative).
    """
    if metadata.num_styles != net.num_styles:
        raise ValueError(f"{metadata.num_styles} style names for a net with {net.num_styles} styles")
    meta = dataclasses.replace(metadata, net=net.config(), version=FORMAT_VERSION)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {NET_PREFIX + k: v.detach().to(dtype).cpu().contiguous() for k, v in net.state_dict().items()}
    torch.save({"styletrain": meta.to_dict(), "state_dict": state}, out)
    return out


def save_slim(path: str | Path, out: str | Path, *, dtype: torch.dtype = torch.float32) -> Path:
    """Copy a training checkpoint without its optimizer state (a third of the size; half that in float16)."""
    net, meta = load_transformer(path)
    return save_transformer(net, meta, out, dtype=dtype)
