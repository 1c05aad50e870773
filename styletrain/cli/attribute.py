"""``styletrain attribute``: which pixels of an image drive a VGG channel, a classifier's class, or a
region of a fast net's output (saliency, guided backprop, Grad-CAM, occlusion)."""

from __future__ import annotations

import argparse

from styletrain.cli._reference import add_common, floats, ints, load_image, non_negative, positive, save


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, metavar="IMG", help="image to explain")
    add_common(p, output_help="output image: the input and its attribution map side by side")
    p.add_argument("--method", choices=("saliency", "guided", "gradcam", "occlusion"), default="saliency")
    p.add_argument("--size", type=positive(), default=224, help="longer side of the input (default 224)")
    target = p.add_argument_group("target (default: a channel of the VGG loss network)")
    target.add_argument("--layer", default="relu4_3", help="VGG layer whose channel is explained (default relu4_3)")
    target.add_argument("--channel", type=non_negative(int),
                        help="VGG channel (default: the one most active on the input)")
    target.add_argument("--unit", type=floats, metavar="FY,FX",
                        help="explain one unit of the channel, at this place as fractions of the map "
                        "(0.5,0.5: the centre) instead of the channel's mean")
    target.add_argument("--classifier", metavar="NAME", help="torchvision classifier, e.g. resnet18")
    target.add_argument("--classifier-weights", metavar="PATH", help="state dict for --classifier")
    target.add_argument("--class", dest="target_class", metavar="C",
                        help="class index or ImageNet name (default: the top prediction)")
    target.add_argument("--checkpoint", metavar="CKPT", help="fast net whose output region is explained")
    target.add_argument("--region", type=ints, metavar="L,T,R,B",
                        help="box of the stylized output in input pixels (default: the central quarter)")
    target.add_argument("--style", metavar="NAME", help="style of a multi-style --checkpoint")
    p.add_argument("--cam-layer", metavar="NAME", help="Grad-CAM layer: a VGG layer name, or a module name "
                   "of the classifier / fast net (default: the target layer, the last spatial layer, or "
                   "the last residual block)")
    p.add_argument("--window", type=positive(), default=16, help="occlusion window in pixels (default 16)")
    p.add_argument("--stride", type=positive(), default=8, help="occlusion stride in pixels (default 8)")


def run(args: argparse.Namespace) -> int:
    from styletrain.errors import UserError
    from styletrain.images import check_output_path
    from styletrain.reference import attribution, targets
    from styletrain.reference.display import draw_box, hstack, show_attribution

    check_output_path(args.output)
    if args.classifier and args.checkpoint:
        raise UserError("choose one target: --classifier or --checkpoint (or neither for a VGG channel)")
    if args.classifier and not args.classifier_weights:
        raise UserError("--classifier needs --classifier-weights PATH (a torchvision state dict)")
    image = load_image(args.input, args.size).to(args.device)  # the target's model follows the image
    if args.classifier:
        target = targets.classifier_class(image, args.classifier, args.classifier_weights,
                                          target_class=args.target_class, cam_layer=args.cam_layer)
    elif args.checkpoint:
        target = targets.fast_net_region(image, args.checkpoint, style=args.style, region=args.region,
                                         cam_layer=args.cam_layer)
    else:
        target = targets.vgg_channel(image, args.layer, channel=args.channel, unit=args.unit,
                                     cam_layer=args.cam_layer, weights=args.vgg_weights)
    print(f"explaining {target.description}")
    method = attribution.METHODS[args.method](target.model, target.layer, window=args.window, stride=args.stride)
    attr = method.attribute(image, target=target.index)
    shown = draw_box(image, target.box) if target.box else image
    save(hstack([shown, show_attribution(image, attr)]), args.output)
    return 0
