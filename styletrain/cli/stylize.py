"""``styletrain stylize``: stylize one image with a checkpoint, keeping its size."""

from __future__ import annotations

import argparse
from pathlib import Path

from styletrain.cli._args import positive


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="a styletrain .ckpt or exported .onnx")
    p.add_argument("--input", required=True, metavar="IMG")
    p.add_argument("--output", required=True, metavar="IMG", help="output image; format from the extension")
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("--style", metavar="NAME", help="style to apply (a multi-style model needs one of these)")
    choice.add_argument("--blend", metavar="NAME=W,...", help="mix of styles by weight, e.g. candy=0.7,mosaic=0.3")
    p.add_argument("--max-side", type=positive(), help="shrink the input so its longer side is at most this")
    p.add_argument("--strength", type=float, help="0 (the photo) to 1 (the full style, default); uses the model's "
                   "identity row where it has one, else blends pixels with the input")
    p.add_argument("--preserve-color", action="store_true", help="keep the photo's colours: take only the "
                   "luminance of the stylized image (Gatys et al. 2016)")
    p.add_argument("--variant", default="auto", choices=["auto", "fp32", "int8", "measure", "bf16"],
                   help="which variant runs: for NAME.onnx fp32 or NAME.int8.onnx (auto: int8 where it exists "
                        "and this CPU runs it faster); for a .ckpt fp32 or bf16 (auto: fp32 on the CPU)")


def run(args: argparse.Namespace) -> int:
    from styletrain.errors import UserError
    from styletrain.images import check_output_path, check_output_size, open_image, resize_max_side, save_image
    from styletrain.runtime import MIN_SIDE, load_stylizer
    from styletrain.runtime.base import check_fits
    from styletrain.styles import parse_blend, style_weights

    output, photo = check_output_path(args.output), Path(args.input)
    if output.exists() and photo.exists() and output.samefile(photo):
        raise UserError(f"--output {output} is the --input photo, which it would replace; choose another "
                        "output path")
    # the photo before the model: a missing or corrupt one, or one too large for the output format,
    # fails without the model load first (the output has the photo's size)
    image = resize_max_side(open_image(photo, min_side=MIN_SIDE), args.max_side, min_side=MIN_SIDE)
    check_output_size(output, image.size)
    stylizer = load_stylizer(args.checkpoint, variant=args.variant)
    weights = style_weights(stylizer.style_names, style=args.style,
                            blend=parse_blend(args.blend) if args.blend else None)
    check_fits(stylizer, image.height, image.width)
    save_image(stylizer(image, weights, strength=args.strength, preserve_color=args.preserve_color), output)
    print(f"wrote {args.output}")
    return 0
