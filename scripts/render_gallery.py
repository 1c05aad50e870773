"""Render docs/gallery.png and docs/blend.png from the shipped ONNX models only.

gallery.png: the demo photos (rows) x the multi-style model's styles (columns), then the
single-style models. blend.png: one photo going from style A to style B in 6 weight steps, then a
4-style mix; and, when the multi-style model has an ``identity`` row, style B at 5 strengths.

    python scripts/render_gallery.py --models checkpoints --content ../shared/data/content --out docs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from styletrain.images import open_image, resize_max_side
from styletrain.runtime import load_stylizer
from styletrain.runtime.variants import variant_files
from styletrain.styles import IDENTITY, style_weights, with_strength

LABEL = 16  # label strip height


def tile(image: Image.Image, label: str, height: int = 160) -> Image.Image:
    """The image scaled to ``height`` px with a caption strip above it."""
    image = image.resize((round(image.width * height / image.height), height), Image.Resampling.LANCZOS)
    out = Image.new("RGB", (image.width, height + LABEL), "white")
    out.paste(image, (0, LABEL))
    ImageDraw.Draw(out).text((3, 2), label[: image.width // 6], fill="black")
    return out


def sheet(rows: list[list[Image.Image]]) -> Image.Image:
    """Tiles laid out in rows, left-aligned, 2 px apart."""
    width = max(sum(t.width + 2 for t in row) for row in rows)
    row_height = max(t.height for row in rows for t in row) + 2
    out = Image.new("RGB", (width, len(rows) * row_height), "white")
    for r, row in enumerate(rows):
        x = 0
        for t in row:
            out.paste(t, (x, r * row_height))
            x += t.width + 2
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("checkpoints"))
    parser.add_argument("--content", type=Path, default=Path("../shared/data/content"))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--side", type=int, default=512, help="longer side at which photos are stylized")
    parser.add_argument("--blend", default="starry_night_crop,the_scream", help="styles A,B of blend.png")
    parser.add_argument("--mix", default="candy,mosaic,udnie,wave_crop", help="4 styles mixed equally")
    args = parser.parse_args()

    # the fp32 models (not their int8 variants), run as written: the sheets show the trained nets
    models = {p.stem: load_stylizer(p, variant="fp32") for p in variant_files(args.models)}
    multi = next(m for m in models.values() if len(m.style_names) > 1)
    singles = {name: m for name, m in models.items() if len(m.style_names) == 1}
    photos = {p.stem: resize_max_side(open_image(p), args.side) for p in sorted(args.content.glob("*.jpg"))}

    styles = [s for s in multi.style_names if s != IDENTITY]
    rows = []
    for name, photo in photos.items():
        row = [tile(photo, name)]
        row += [tile(multi(photo, style_weights(multi.style_names, style=s)), s) for s in styles]
        row += [tile(m(photo, np.ones(1, np.float32)), f"{n} (IN)") for n, m in singles.items()]
        rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    sheet(rows).save(args.out / "gallery.png", optimize=True)

    a, b = args.blend.split(",")
    photo = photos.get("chicago", next(iter(photos.values())))
    row = [tile(photo, "photo", 240)]
    for t in np.linspace(0.0, 1.0, 6):
        weights = style_weights(multi.style_names, blend={a: 1 - t, b: t} if 0 < t < 1 else None,
                                style=None if 0 < t < 1 else (a if t == 0 else b))
        row.append(tile(multi(photo, weights), f"{a[:8]} {1 - t:.1f} / {b[:8]} {t:.1f}", 240))
    mix = args.mix.split(",")
    row.append(tile(multi(photo, style_weights(multi.style_names, blend=dict.fromkeys(mix, 0.25))),
                    "mix " + "+".join(s[:6] for s in mix), 240))
    rows = [row]
    if IDENTITY in multi.style_names:  # strength through the identity row, one pass each
        full = style_weights(multi.style_names, style=b)
        rows.append([tile(photo, "photo", 240)] + [
            tile(multi(photo, with_strength(multi.style_names, full, s)[0]), f"{b[:10]} strength {s:.2f}", 240)
            for s in (0.0, 0.25, 0.5, 0.75, 1.0)])
    sheet(rows).save(args.out / "blend.png", optimize=True)
    print(f"wrote {args.out / 'gallery.png'} and {args.out / 'blend.png'}")


if __name__ == "__main__":
    main()
