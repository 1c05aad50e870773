"""``styletrain visualize``: what VGG channels respond to.

Three views: channel images by regularised gradient ascent (default), the first layer's filters
(``--filters``), or the photo patches that excite a channel most (``--photos DIR``).
"""

from __future__ import annotations

import argparse

from styletrain.cli._reference import add_common, ints, non_negative, positive, save


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--layer", default="relu3_3", help="VGG layer (default relu3_3)")
    p.add_argument("--channel", type=ints, default=[0], metavar="C[,C...]",
                   help="channel(s) to show, one image each in a row (default 0)")
    view = p.add_mutually_exclusive_group()
    view.add_argument("--filters", action="store_true", help="show the first convolution's 64 filters")
    view.add_argument("--photos", metavar="DIR", help="show the patches of these photos that excite the channel most")
    p.add_argument("--top", type=positive(), default=16, help="patches to show with --photos (default 16)")
    p.add_argument("--limit", type=positive(), help="score at most this many photos (sorted by name)")
    p.add_argument("--photo-size", type=positive(), default=224,
                   help="longer side at which photos are scored (default 224)")
    p.add_argument("--size", type=positive(), default=128, help="side of each channel image (default 128)")
    p.add_argument("--steps", type=non_negative(int), default=100, help="ascent steps (default 100)")
    p.add_argument("--lr", type=positive(float), default=0.02, help="normalised step size (default 0.02)")
    p.add_argument("--decay", type=non_negative(), default=1e-3, help="L2 decay per step (default 1e-3)")
    p.add_argument("--blur-every", type=non_negative(int), default=4, help="blur every N steps; 0: never")
    p.add_argument("--blur-sigma", type=non_negative(), default=0.5, help="blur radius in pixels (default 0.5)")
    p.add_argument("--clip-percentile", type=non_negative(), default=10.0,
                   help="reset the weakest N%% of pixels to grey each step (default 10)")
    p.add_argument("--jitter", type=non_negative(int), default=4, help="random shift in pixels (default 4)")
    p.add_argument("--centre-unit", action="store_true", help="maximise the centre unit instead of the channel mean")


def run(args: argparse.Namespace) -> int:
    from styletrain.data import list_images
    from styletrain.images import check_output_path, check_photos, load_tensor
    from styletrain.metadata import MIN_SIDE
    from styletrain.reference import visualize as vis
    from styletrain.reference.display import hstack, vstack
    from styletrain.reference.layers import check_layer
    from styletrain.vgg import LossNetwork, check_layers

    check_output_path(args.output)
    if args.filters:
        save(vis.filter_grid(LossNetwork(["conv1_1"], weights=args.vgg_weights)), args.output)
        return 0
    check_layers([args.layer])
    network = LossNetwork([args.layer], weights=args.vgg_weights).to(args.device)
    for channel in args.channel:
        check_layer(network, args.layer, channel)
    if args.photos:
        files = list_images(args.photos, option="--photos")[: args.limit]
        check_photos(files, args.photo_size, min_side=MIN_SIDE, option="--photo-size")
        photos = ((str(f), load_tensor(f, max_side=args.photo_size, min_side=MIN_SIDE, option="--photo-size"))
                  for f in files)
        rows = []
        for channel, patches in zip(args.channel, vis.top_patches(network, args.layer, args.channel, photos,
                                                                   top=args.top)):
            for patch in patches:
                print(f"{args.layer}:{channel} {patch.score:.4g} {patch.source} box {patch.box}")
            rows.append(hstack([patch.image for patch in patches], gap=2))
        save(vstack(rows), args.output)
        return 0
    images = [vis.visualize_channel(network, args.layer, channel, size=(args.size, args.size),
                                    centre_unit=args.centre_unit, steps=args.steps, lr=args.lr,
                                    decay=args.decay, blur_every=args.blur_every, blur_sigma=args.blur_sigma,
                                    clip_percentile=args.clip_percentile, jitter=args.jitter, seed=args.seed,
                                    progress=not args.no_progress).image
              for channel in args.channel]
    save(hstack(images), args.output)
    return 0
