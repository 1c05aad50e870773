"""Write a multi-style checkpoint that holds only some of its styles (the other rows are dropped).

    python scripts/keep_styles.py runs/interim/ship/multistyle.ckpt checkpoints/multistyle.ckpt --drop identity

Each style of a conditional-instance-norm net is one row of scale/shift per norm layer, so the kept
styles compute exactly what they did. Used to ship the interim multistyle net without its
``identity`` row (see checkpoints/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from styletrain.checkpoint import load_transformer, save_transformer
from styletrain.styles import style_name
from styletrain.transformer import TransformerNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--drop", nargs="+", required=True, metavar="STYLE")
    args = parser.parse_args()

    net, meta = load_transformer(args.checkpoint)
    unknown = set(args.drop) - set(meta.style_names)
    if unknown:
        parser.error(f"{sorted(unknown)} not in {meta.style_names}")
    rows = [i for i, name in enumerate(meta.style_names) if name not in args.drop]
    config = {**net.config(), "num_styles": len(rows)}
    kept = TransformerNet(**config)
    state = {k: v[rows] if k.endswith((".scale", ".shift")) else v for k, v in net.state_dict().items()}
    kept.load_state_dict(state)
    names = [meta.style_names[i] for i in rows]
    images = [p for p in meta.style_images if style_name(p) in names]
    meta = dataclasses.replace(meta, style_names=names, style_images=images,
                               extra={**meta.extra, "dropped_styles": list(args.drop)})
    half = all(torch.equal(v.half().float(), v) for v in kept.state_dict().values() if v.is_floating_point())
    save_transformer(kept, meta, args.output, dtype=torch.float16 if half else torch.float32)  # as it came
    print(f"wrote {args.output}: {len(names)} styles ({', '.join(names)})")


if __name__ == "__main__":
    main()
