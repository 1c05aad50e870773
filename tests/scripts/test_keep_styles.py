"""scripts/keep_styles.py: a multi-style checkpoint without some of its rows, the rest unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from styletrain.checkpoint import load_transformer, save_slim
from support import make_checkpoint

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "keep_styles.py"


def test_dropping_a_row_leaves_the_other_styles_bit_identical(tmp_path: Path) -> None:
    full = save_slim(make_checkpoint(tmp_path / "full.ckpt", ["candy", "identity", "udnie"]), tmp_path / "half.ckpt",
                     dtype=torch.float16)
    out = tmp_path / "kept.ckpt"
    subprocess.run([sys.executable, str(SCRIPT), str(full), str(out), "--drop", "identity"], check=True,
                   capture_output=True)
    net, meta = load_transformer(full)
    kept, kept_meta = load_transformer(out)
    assert kept_meta.style_names == ["candy", "udnie"] and kept_meta.extra["dropped_styles"] == ["identity"]
    assert kept.num_styles == 2 and out.stat().st_size < full.stat().st_size * 1.05  # still float16
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        for k, name in enumerate(kept_meta.style_names):
            assert torch.equal(kept(x, torch.eye(2)[k:k + 1]), net(x, torch.eye(3)[meta.style_names.index(name)][None]))
