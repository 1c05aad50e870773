"""``styletrain gatys``: style transfer by optimising the pixels (the reference for fast nets)."""

from __future__ import annotations

import argparse

from styletrain.cli._args import add_loss_options, loss_settings
from styletrain.cli._reference import add_common, floats, load_image, non_negative, positive, save


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--content", required=True, metavar="IMG", help="content photo")
    p.add_argument("--style", required=True, action="append", metavar="IMG",
                   help="style image (repeat to blend several)")
    p.add_argument("--style-weights", type=floats, metavar="W,W,...",
                   help="blend weights, one per --style (default: equal); normalised to sum 1")
    add_common(p)
    p.add_argument("--size", type=positive(), default=256, help="longer side of the output (default 256)")
    p.add_argument("--steps", type=non_negative(int), default=100,
                   help="optimiser steps per scale (default 100)")
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs")
    p.add_argument("--lr", type=positive(float), help="learning rate (default: 1 for L-BFGS, 0.02 for Adam)")
    p.add_argument("--init", choices=("content", "noise", "style"), default="content")
    add_loss_options(p)
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--style-scale", type=positive(float), default=1.0,
                       help="style image's longer side as a multiple of the output's (default 1)")
    scale.add_argument("--style-size", type=positive(), help="style image's longer side in pixels")
    p.add_argument("--preserve-color", action="store_true",
                   help="transfer luminance only and keep the photo's colours (Gatys et al. 2016)")
    p.add_argument("--scales", type=positive(), default=1,
                   help="coarse-to-fine: optimise at this many resolutions, halving the side (default 1)")


def run(args: argparse.Namespace) -> int:
    from styletrain.images import check_output_path, load_tensor
    from styletrain.losses import LossConfig
    from styletrain.reference.gatys import stylize

    check_output_path(args.output)
    config = LossConfig(**loss_settings(args))
    content = load_image(args.content, args.size)
    styles = [load_tensor(path, max_side=2048) for path in args.style]
    result = stylize(content, styles, style_weights=args.style_weights, config=config, steps=args.steps,
                     optimizer=args.optimizer, lr=args.lr, init=args.init, style_scale=args.style_scale,
                     style_size=args.style_size, preserve_color=args.preserve_color, scales=args.scales,
                     weights=args.vgg_weights, device=args.device, seed=args.seed, progress=not args.no_progress)
    scored = " (of the luminance optimised; the photo's colours were put back after)" if args.preserve_color else ""
    print(f"losses{scored}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items()))
    save(result.image, args.output)
    return 0
