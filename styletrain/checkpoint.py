"""Reading trained nets back from checkpoints, without Lightning or the VGG weights.

A styletrain checkpoint is a Lightning checkpoint (or a slim copy of one) whose ``"styletrain"``
entry holds the metadata: format version, style names, net config, loss and training settings.
"""

from __future__ import annotations

import pickle
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
    except pickle.UnpicklingError:
        # torch's own message suggests an unsafe load; never pass that advice on
        raise UserError(f"{path} holds Python objects beyond tensors and plain data, which styletrain refuses "
                        "to load (loading them could run code); it is not a checkpoint styletrain wrote") from None
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


def save_transformer(net: TransformerNet, metadata: dict[str, Any], out: str | Path) -> Path:
    """Write a slim checkpoint: net weights and metadata only (no optimizer state).

    ``metadata`` must hold at least ``style_names``; the net config and format version are added.
    """
    meta = {"format": "styletrain", **metadata, "version": FORMAT_VERSION, "net": net.config()}
    if len(meta["style_names"]) != net.num_styles:
        raise ValueError(f"{len(meta['style_names'])} style names for a net with {net.num_styles} styles")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {NET_PREFIX + k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    torch.save({"styletrain": meta, "state_dict": state}, out)
    return out


def save_slim(path: str | Path, out: str | Path) -> Path:
    """Copy a training checkpoint without its optimizer state (a quarter of the size)."""
    net, meta = load_transformer(path)
    return save_transformer(net, meta, out)
