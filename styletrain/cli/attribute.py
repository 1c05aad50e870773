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


def _vgg_target(args, image):
    from styletrain.errors import UserError
    from styletrain.reference.targets import LayerScores
    from styletrain.vgg import LossNetwork, layer_names

    names = layer_names()
    cam = args.cam_layer or args.layer
    for name in {args.layer, cam}:
        if name not in names:
            raise UserError(f"unknown layer {name!r}; choose from {names}")
    if names.index(cam) > names.index(args.layer):
        raise UserError(f"--cam-layer {cam} lies after the target layer {args.layer}; choose an earlier one")
    network = LossNetwork([args.layer, cam], weights=args.vgg_weights)
    if args.unit is not None and (len(args.unit) != 2 or not all(0 <= v <= 1 for v in args.unit)):
        raise UserError(f"--unit needs two fractions FY,FX in [0, 1]; got {args.unit}")
    model = LayerScores(network, args.layer, tuple(args.unit) if args.unit else None)
    channel = args.channel
    if channel is None:
        import torch

        with torch.no_grad():
            channel = int(model(image)[0].argmax())
        print(f"explaining {args.layer} channel {channel} (the most active)")
    return model, channel, network.module(cam)


def _classifier_target(args, image):
    import torch

    from styletrain.errors import UserError
    from styletrain.reference.targets import class_index, default_cam_layer, load_classifier

    if not args.classifier_weights:
        raise UserError("--classifier needs --classifier-weights PATH (a torchvision state dict)")
    model, categories = load_classifier(args.classifier, args.classifier_weights)
    if args.target_class is None:
        with torch.no_grad():
            target = int(model(image)[0].argmax())
    else:
        target = class_index(args.target_class, categories)
    label = categories[target] if categories and target < len(categories) else str(target)
    print(f"explaining class {target} ({label})")
    name = args.cam_layer or default_cam_layer(model.classifier, image)
    try:
        layer = model.classifier.get_submodule(name)
    except AttributeError:
        raise UserError(f"{args.classifier} has no module {name!r} for --cam-layer") from None
    return model, target, layer


def _region_target(args, image):
    import torch

    from styletrain.checkpoint import load_transformer
    from styletrain.errors import UserError
    from styletrain.reference.targets import RegionScore
    from styletrain.styles import style_weights

    net, meta = load_transformer(args.checkpoint)
    weights = torch.from_numpy(style_weights(meta["style_names"], style=args.style)).unsqueeze(0)
    h, w = image.shape[-2:]
    box = args.region or [w // 4, h // 4, 3 * w // 4, 3 * h // 4]
    if len(box) != 4:
        raise UserError(f"--region needs four numbers LEFT,TOP,RIGHT,BOTTOM; got {box}")
    if box[2] > w or box[3] > h:
        raise UserError(f"--region {box} lies outside the {w}x{h} input (at --size {args.size})")
    model = RegionScore(net.requires_grad_(False), tuple(box), weights if net.conditional else None)
    name = args.cam_layer or f"blocks.{2 + net.num_residuals}"
    try:
        layer = net.get_submodule(name)
    except AttributeError:
        raise UserError(f"the fast net has no module {name!r} for --cam-layer") from None
    return model, 0, layer


def run(args: argparse.Namespace) -> int:
    from styletrain.errors import UserError
    from styletrain.images import check_output_path
    from styletrain.reference import attribution
    from styletrain.reference.display import draw_box, gradient_image, hstack, overlay

    check_output_path(args.output)
    if args.classifier and args.checkpoint:
        raise UserError("choose one target: --classifier or --checkpoint (or neither for a VGG channel)")
    image = load_image(args.input, args.size)
    if args.classifier:
        model, target, layer = _classifier_target(args, image)
    elif args.checkpoint:
        model, target, layer = _region_target(args, image)
    else:
        model, target, layer = _vgg_target(args, image)
    if args.method == "gradcam":
        attr = attribution.GradCAM(model, layer).attribute(image, target=target)
    elif args.method == "occlusion":
        attr = attribution.Occlusion(model).attribute(image, target=target, window=args.window, stride=args.stride)
    else:
        attr = attribution.METHODS[args.method](model).attribute(image, target=target)
    picture = gradient_image(attr) if args.method == "guided" else overlay(image, attr)
    shown = draw_box(image, model.box) if args.checkpoint else image
    save(hstack([shown, picture]), args.output)
    return 0
