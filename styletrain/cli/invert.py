"""``styletrain invert``: reconstruct a photo from its code at one or more VGG layers."""

from __future__ import annotations

import argparse

from styletrain.cli._reference import add_common, load_image, non_negative, positive, save


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, metavar="IMG", help="photo whose features are inverted")
    add_common(p, output_help="output image: the photo, then one inversion per --layer, in a row")
    p.add_argument("--layer", action="append", metavar="NAME",
                   help="VGG layer to invert (repeat for a row; default relu2_2, relu3_3, relu4_3)")
    p.add_argument("--size", type=positive(), default=128, help="longer side of the images (default 128)")
    p.add_argument("--steps", type=non_negative(int), default=100, help="optimiser steps (default 100)")
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs")
    p.add_argument("--lr", type=positive(float))
    p.add_argument("--alpha", type=positive(float), default=6.0, help="alpha-norm exponent (default 6)")
    p.add_argument("--alpha-weight", type=non_negative(), default=1e-4)
    p.add_argument("--beta", type=positive(float), default=2.0, help="TV exponent beta (default 2)")
    p.add_argument("--tv-weight", type=non_negative(), default=0.05)


def run(args: argparse.Namespace) -> int:
    from styletrain.images import check_output_path
    from styletrain.reference.display import hstack
    from styletrain.reference.inversion import invert_layers
    from styletrain.vgg import LossNetwork, check_layers

    check_output_path(args.output)
    layers = args.layer or ["relu2_2", "relu3_3", "relu4_3"]
    check_layers(layers)
    image = load_image(args.input, args.size)
    network = LossNetwork(layers, weights=args.vgg_weights).to(args.device)
    results = invert_layers(image, layers, network=network, steps=args.steps, optimizer=args.optimizer,
                            lr=args.lr, alpha=args.alpha, alpha_weight=args.alpha_weight, beta=args.beta,
                            tv_weight=args.tv_weight, seed=args.seed, progress=not args.no_progress)
    for layer, result in zip(layers, results):
        print(f"{layer}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items()))
    save(hstack([image, *(r.image for r in results)]), args.output)
    return 0
