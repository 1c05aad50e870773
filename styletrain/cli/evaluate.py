"""``styletrain evaluate``: score a trained net against the Gatys optimum under its own loss settings."""

from __future__ import annotations

import argparse

from styletrain.cli._reference import non_negative, positive, torch_device


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="styletrain checkpoint (.ckpt)")
    p.add_argument("--content-dir", required=True, metavar="DIR", help="folder of photos to score")
    p.add_argument("--style", action="append", metavar="NAME", help="style to score (repeat; default: all)")
    p.add_argument("--style-dir", metavar="DIR",
                   help="where the style images NAME.jpg are, if not at the paths the checkpoint records")
    p.add_argument("--steps", type=non_negative(int), default=100, help="L-BFGS steps for Gatys (default 100)")
    p.add_argument("--size", type=positive(), default=256, help="longer side of the photos (default 256)")
    p.add_argument("--limit", type=positive(), help="score at most this many photos (sorted by name)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--grid", metavar="IMG", help="write photo | fast | Gatys for each row")
    p.add_argument("--vgg-weights", metavar="PATH", help="VGG weights file (default: the checkpoint's if it "
                   "exists, else $STYLETRAIN_VGG_WEIGHTS, else torchvision's)")
    p.add_argument("--device", type=torch_device, default="cpu", help="torch device, e.g. cuda (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--variant", action="append", metavar="MODEL", default=[],
                   help="also score this export of the same net (e.g. NAME.int8.onnx, run as it is on the CPU), "
                        "or 'bf16' for the checkpoint under bf16 autocast; repeat for several")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from styletrain.data import list_images
    from styletrain.files import check_writable, write_atomically
    from styletrain.images import check_output_path, save_image
    from styletrain.reference.evaluate import evaluate, format_table, grid, identity_fidelity

    if args.grid:
        check_output_path(args.grid)
    if args.json:
        check_writable(args.json)
    photos = list_images(args.content_dir)[: args.limit]
    rows = evaluate(args.checkpoint, photos, styles=args.style, steps=args.steps, size=args.size,
                    style_dir=args.style_dir, weights=args.vgg_weights, device=args.device,
                    progress=not args.no_progress, variants=load_variants(args.checkpoint, args.variant))
    print(format_table(rows))
    identity = identity_fidelity(args.checkpoint, photos, size=args.size, device=args.device)
    if identity:
        print("identity row (strength 0), mean |diff| from the photo: " +
              ", ".join(f"{Path(p).name} {d:.2f}/255" for p, d in identity.items()))
    if args.json:
        path = Path(args.json)
        meta = {"checkpoint": str(args.checkpoint), "steps": args.steps, "size": args.size}
        extra = {"identity_mean_abs_diff": identity} if identity else {}
        text = json.dumps({**meta, "rows": [r.to_json() for r in rows], **extra}, indent=2) + "\n"
        write_atomically(path, lambda part: part.write_text(text))
        print(f"wrote {path}")
    if args.grid:
        save_image(grid(rows), args.grid)
        print(f"wrote {args.grid}")
    return 0


def load_variants(checkpoint: str, specs: list[str]) -> dict:
    """``--variant`` values as stylizers by name: ``bf16`` (torch), or an .onnx file run as it is on the CPU."""
    from pathlib import Path

    from styletrain.errors import UserError

    variants = {}
    for spec in specs:
        if spec == "bf16":
            from styletrain.runtime.torch_backend import TorchStylizer

            variants[spec] = TorchStylizer.from_checkpoint(checkpoint, precision="bfloat16")
        elif spec.lower().endswith(".onnx"):
            from styletrain.runtime.onnx_backend import CPU, OnnxStylizer

            variants[Path(spec).name] = OnnxStylizer(spec, providers=[CPU])
        else:
            raise UserError(f"--variant takes an .onnx file or 'bf16'; got {spec!r}")
    return variants
