"""``styletrain deepdream``: amplify what a VGG layer (or one channel) sees in a photo."""

from __future__ import annotations

import argparse

from styletrain.cli._reference import add_common, load_image, non_negative, positive, save


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, metavar="IMG", help="photo to dream on")
    add_common(p)
    p.add_argument("--layer", default="relu4_3", help="VGG layer to amplify (default relu4_3)")
    p.add_argument("--channel", type=non_negative(int), help="amplify only this channel of the layer")
    p.add_argument("--size", type=positive(), default=256, help="longer side of the output (default 256)")
    p.add_argument("--octaves", type=positive(), default=3, help="pyramid levels (default 3)")
    p.add_argument("--octave-scale", type=positive(float), default=1.4, help="size ratio between octaves")
    p.add_argument("--steps", type=non_negative(int), default=10, help="ascent steps per octave (default 10)")
    p.add_argument("--lr", type=positive(float), default=0.01, help="step size in pixel units (default 0.01)")
    p.add_argument("--jitter", type=non_negative(int), default=16, help="random shift in pixels (default 16)")


def run(args: argparse.Namespace) -> int:
    from styletrain.images import check_output_path
    from styletrain.reference.deepdream import deepdream
    from styletrain.vgg import LossNetwork, check_layers

    check_output_path(args.output)
    check_layers([args.layer])
    image = load_image(args.input, args.size)
    network = LossNetwork([args.layer], weights=args.vgg_weights).to(args.device)
    result = deepdream(image, args.layer, channel=args.channel, octaves=args.octaves,
                       octave_scale=args.octave_scale, steps=args.steps, lr=args.lr, jitter=args.jitter,
                       network=network, seed=args.seed, progress=not args.no_progress)
    save(result.image, args.output)
    return 0
