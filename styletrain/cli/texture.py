"""``styletrain texture``: synthesise a texture of any size from noise by Gram matching."""

from __future__ import annotations

import argparse

from styletrain.cli._args import style_layers
from styletrain.cli._reference import add_common, floats, non_negative, positive, save
from styletrain.loss_config import LossConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--style", required=True, action="append", metavar="IMG",
                   help="texture example (repeat to blend several)")
    p.add_argument("--style-weights", type=floats, metavar="W,W,...", help="blend weights, one per --style")
    add_common(p)
    p.add_argument("--size", type=positive(), default=256, help="square output side (default 256)")
    p.add_argument("--width", type=positive(), help="output width (overrides --size)")
    p.add_argument("--height", type=positive(), help="output height (overrides --size)")
    p.add_argument("--style-size", type=positive(), default=256,
                   help="longer side at which the example is read; sets the texture's scale (default 256)")
    p.add_argument("--steps", type=non_negative(int), default=100, help="optimiser steps per scale (default 100)")
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs")
    p.add_argument("--lr", type=positive(float))
    p.add_argument("--tv-weight", type=non_negative(), default=LossConfig.tv_weight)
    p.add_argument("--style-layers", default=",".join(LossConfig.style_layers))
    p.add_argument("--scales", type=positive(), default=1, help="coarse-to-fine resolutions (default 1)")


def run(args: argparse.Namespace) -> int:
    from styletrain.images import check_output_path, load_tensor
    from styletrain.reference.gatys import synthesize

    check_output_path(args.output)
    layers = style_layers(args.style_layers)
    config = LossConfig(content_layer=layers[-1], style_layers=layers, tv_weight=args.tv_weight)
    styles = [load_tensor(path, max_side=2048) for path in args.style]
    size = (args.height or args.size, args.width or args.size)
    result = synthesize(styles, size, style_weights=args.style_weights, config=config, steps=args.steps,
                        optimizer=args.optimizer, lr=args.lr, style_size=args.style_size, scales=args.scales,
                        weights=args.vgg_weights, device=args.device, seed=args.seed,
                        progress=not args.no_progress)
    print("losses: " + ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items()))
    save(result.image, args.output)
    return 0
