"""Copy trained runs into checkpoints/: a slim .ckpt (weights + metadata) and a checked .onnx each.

Both hold the weights in float16 (the .onnx computes in float32 from them, losslessly), which keeps
the five width-32 models under the 60 MB that checkpoints/ may take.

    python scripts/ship_checkpoints.py runs/interim --names multistyle mosaic starry_night_crop the_scream wave_crop
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from styletrain.checkpoint import save_slim
from styletrain.export import export_onnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="folder of training runs, each with last.ckpt")
    parser.add_argument("--names", nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=Path("checkpoints"))
    args = parser.parse_args()
    for name in args.names:
        slim = save_slim(args.runs / name / "last.ckpt", args.out / f"{name}.ckpt", dtype=torch.float16)
        onnx_path = export_onnx(slim, args.out / f"{name}.onnx")
        print(f"{name}: {slim} ({slim.stat().st_size / 1e6:.1f} MB), "
              f"{onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
