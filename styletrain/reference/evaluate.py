"""The yardstick for trained styles: a fast net's perceptual loss against the Gatys optimum's.

For each photo and style, the fast net's output and a Gatys optimisation from the photo (L-BFGS)
are scored with the checkpoint's own loss settings (layers, weights, style images and scale); the
ratio fast / Gatys says how close the net comes to the optimisation it approximates (1 = as good;
with few L-BFGS steps the "optimum" is loose, so compare ratios at equal ``steps`` and ``size``).

``variants`` scores other runtimes of the same net on the same photos, styles and loss (e.g. the
int8 ``NAME.int8.onnx`` or bf16 torch): each row then also holds each variant's losses, its
ratio to the same Gatys result, and its mean |difference| from the fast net's output (0-255).
The Gatys run is shared, so the variant's ratio over the fast ratio is exactly its loss change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from styletrain.checkpoint import load_transformer
from styletrain.data import IMAGE_SUFFIXES
from styletrain.errors import UserError, names_text
from styletrain.images import check_photos, load_tensor, open_image, resize_side, to_pil, to_tensor
from styletrain.losses import LossConfig, PerceptualLoss
from styletrain.metadata import MIN_SIDE, ModelMetadata
from styletrain.reference import objectives
from styletrain.reference.optimize import optimize
from styletrain.runtime.base import Stylizer
from styletrain.styles import IDENTITY, style_name
from styletrain.vgg import WeightsSpec

log = logging.getLogger(__name__)


@dataclass
class EvalRow:
    """Losses (content, style, tv, total) of the fast net and of Gatys for one photo and style."""

    photo: str
    style: str
    fast: dict[str, float]
    gatys: dict[str, float]
    ratio: float
    """fast total / Gatys total: 1 means the net matches the optimisation."""
    gatys_seconds: float
    images: dict[str, Tensor] = field(default_factory=dict, repr=False, compare=False)
    """content, fast and gatys images (1, 3, H, W), for the grid."""
    variants: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per variant name: its loss terms, ``ratio`` (its total / Gatys total) and ``mean_abs_diff``
    (mean |variant - fast| on the 0-255 scale, after rounding both to 8-bit pixels)."""

    def to_json(self) -> dict[str, Any]:
        out = {"photo": self.photo, "style": self.style, "fast": self.fast, "gatys": self.gatys,
               "ratio": self.ratio, "gatys_seconds": self.gatys_seconds}
        return out | ({"variants": self.variants} if self.variants else {})


def loss_config(meta: ModelMetadata) -> LossConfig:
    """The checkpoint's loss settings; defaults if it has none."""
    if not meta.loss:
        log.warning("checkpoint has no loss settings; scoring with the defaults %s", LossConfig())
        return LossConfig()
    return LossConfig.from_dict(meta.loss)


def style_paths(meta: ModelMetadata, names: Sequence[str], style_dir: str | Path | None = None) -> dict[str, Path]:
    """Where each style's image is: NAME.jpg/png/... in ``style_dir`` if given, else the training path."""
    recorded = {style_name(p): Path(p) for p in meta.style_images}
    found: dict[str, Path] = {}
    for name in names:
        candidates = [Path(style_dir) / f"{name}{suffix}" for suffix in IMAGE_SUFFIXES] if style_dir else []
        candidates += [recorded[name]] if name in recorded else []
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            where = f" (the checkpoint says {recorded[name]})" if name in recorded else ""
            raise UserError(f"style image for {name!r} not found{where}; pass --style-dir DIR holding "
                            f"{name}.jpg (or .png/.webp)")
        found[name] = path
    return found


def evaluate(
    checkpoint: str | Path,
    photos: Sequence[str | Path],
    *,
    styles: Sequence[str] | None = None,
    steps: int = 100,
    size: int = 256,
    style_dir: str | Path | None = None,
    weights: WeightsSpec = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    variants: Mapping[str, Stylizer] | None = None,
) -> list[EvalRow]:
    """Score the checkpoint's fast net against Gatys (L-BFGS from the photo, ``steps`` iterations)
    on each photo (longer side at most ``size``) and style (default: all of the checkpoint's but the
    ``identity`` row, which has no style to score).

    ``variants`` (name -> a ``Stylizer`` of the same net, e.g. an int8 export) are scored too.
    """
    net, meta = load_transformer(checkpoint)
    names = meta.style_names
    chosen = list(dict.fromkeys(styles)) if styles else [n for n in names if n != IDENTITY]  # each style once
    unknown = [s for s in chosen if s not in names]
    if unknown:
        raise UserError(f"unknown style(s) {unknown}; the checkpoint holds {names}")
    if IDENTITY in chosen:
        raise UserError(f"the {IDENTITY!r} row reproduces the photo (it is there for --strength); "
                        "there is no style to score it against")
    if not photos:
        raise UserError("give at least one photo")
    check_variants(variants or {}, meta.style_names, net.config())
    check_photos(photos, size, min_side=MIN_SIDE, option="size")
    config = loss_config(meta)
    if weights is None and meta.vgg_weights and Path(meta.vgg_weights).is_file():
        weights = meta.vgg_weights
    style_size = meta.style_size
    style_images = []
    for name, path in style_paths(meta, chosen, style_dir).items():
        image = open_image(path)
        style_images.append(to_tensor(resize_side(image, style_size) if style_size else image))
    device = torch.device(device)
    net.to(device)
    loss = PerceptualLoss(config, weights=weights).to(device)
    loss.set_styles(style_images)  # Gram targets computed once, shared by every photo
    rows = []
    for photo in photos:
        content = load_tensor(photo, max_side=size, min_side=MIN_SIDE).to(device)
        content_features = loss.content_features(content)
        for k, name in enumerate(chosen):
            loss_w = torch.zeros(1, len(chosen), device=device)
            loss_w[0, k] = 1.0
            net_w = torch.zeros(1, len(names), device=device)
            net_w[0, names.index(name)] = 1.0
            with torch.no_grad():
                fast = net(content, net_w)
                fast_losses = loss(fast, loss_w, content_features=content_features).as_floats()
                scored = {}
                for variant, stylizer in (variants or {}).items():
                    out = torch.from_numpy(stylizer.run(content.cpu().numpy(), net_w[0].cpu().numpy())).to(device)
                    scored[variant] = loss(out, loss_w, content_features=content_features).as_floats()
                    scored[variant]["mean_abs_diff"] = _mean_abs_diff(out, fast)
            start = time.perf_counter()
            result = optimize(content, objectives.style_transfer(loss, loss_w, content_features), steps=steps,
                              method="lbfgs", progress=progress, desc=f"gatys {Path(photo).stem}/{name}")
            seconds = time.perf_counter() - start
            gatys_total = result.losses["total"]
            ratio = fast_losses["total"] / gatys_total if gatys_total > 0 else float("inf")
            for terms in scored.values():
                terms["ratio"] = terms["total"] / gatys_total if gatys_total > 0 else float("inf")
            rows.append(EvalRow(str(photo), name, fast_losses, dict(result.losses), ratio, seconds,
                                {"content": content.cpu(), "fast": fast.cpu(), "gatys": result.image.cpu()},
                                scored))
            log.info("%s / %s: fast %.4g, gatys %.4g, ratio %.3f (%.1f s)", Path(photo).name, name,
                     fast_losses["total"], result.losses["total"], ratio, seconds)
    return rows


def check_variants(variants: Mapping[str, Stylizer], style_names: Sequence[str], net: Mapping[str, Any]) -> None:
    """Refuse a variant that is not a runtime of the checkpoint's net: its style names, and its net
    config where its metadata has one, must be the checkpoint's (else it would be scored as this net)."""
    for name, stylizer in variants.items():
        theirs = stylizer.metadata
        if list(theirs.style_names) != list(style_names):
            raise UserError(f"variant {name} holds styles {names_text(theirs.style_names)}, but the checkpoint "
                            f"holds {names_text(style_names)}; give an export of this checkpoint (styletrain export)")
        if theirs.net and dict(theirs.net) != dict(net):
            raise UserError(f"variant {name} is a net {theirs.net}, but the checkpoint's is {dict(net)}; "
                            "give an export of this checkpoint (styletrain export)")


@torch.no_grad()
def identity_fidelity(checkpoint: str | Path, photos: Sequence[str | Path], *, size: int = 256,
                      device: str | torch.device = "cpu") -> dict[str, float]:
    """How far the ``identity`` row's output is from each photo: mean |diff| on the 0-255 scale
    (0: strength 0 gives back the photo). Empty when the net has no identity row."""
    net, meta = load_transformer(checkpoint)
    if IDENTITY not in meta.style_names:
        return {}
    net.to(device)
    weights = torch.zeros(1, len(meta.style_names), device=device)
    weights[0, meta.style_names.index(IDENTITY)] = 1.0
    diffs = {}
    for photo in photos:
        content = load_tensor(photo, max_side=size, min_side=MIN_SIDE).to(device)
        diffs[str(photo)] = _mean_abs_diff(net(content, weights), content)
    return diffs


def _mean_abs_diff(a: Tensor, b: Tensor) -> float:
    """Mean |a - b| of two [0, 1] images on the 0-255 scale, both rounded to 8-bit pixels first."""
    def pixels(x: Tensor) -> Tensor:
        return (x.float().nan_to_num(0.0).clamp(0.0, 1.0) * 255.0 + 0.5).floor()

    return float((pixels(a) - pixels(b)).abs().mean())


def format_table(rows: Sequence[EvalRow]) -> str:
    """A plain-text table: one line per photo and style, then the fast net's loss terms by name."""
    names = [name for name in (rows[0].fast if rows else {}) if name != "total"]
    columns = [(f"fast {name}", max(11, len(name) + 5)) for name in names]
    header = f"{'photo':<24} {'style':<22} {'fast total':>11} {'gatys total':>11} {'ratio':>7}" + \
        "".join(f" {label:>{width}}" for label, width in columns)
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{Path(r.photo).name[:24]:<24} {r.style[:22]:<22} {r.fast['total']:>11.4g} "
                     f"{r.gatys['total']:>11.4g} {r.ratio:>7.3f}" +
                     "".join(f" {r.fast[name]:>{width}.4g}" for name, (_, width) in zip(names, columns)))
        for variant, v in r.variants.items():
            lines.append(f"{'':<24} {'  ' + variant[:20]:<22} {v['total']:>11.4g} {'':>11} {v['ratio']:>7.3f}" +
                         "".join(f" {v[name]:>{width}.4g}" for name, (_, width) in zip(names, columns)) +
                         f"  x{v['total'] / r.fast['total']:.4f} of fast, mean |diff| {v['mean_abs_diff']:.2f}/255")
    return "\n".join(lines)


def grid(rows: Sequence[EvalRow], *, caption_height: int = 14, gap: int = 4) -> Image.Image:
    """Side-by-side grid: per row the photo, the fast net's output and the Gatys result, captioned."""
    tiles = [[to_pil(r.images[k]) for k in ("content", "fast", "gatys")] for r in rows]
    width = max(sum(t.width for t in row) + gap * 2 for row in tiles)
    height = sum(max(t.height for t in row) + caption_height + gap for row in tiles)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for r, row in zip(rows, tiles):
        draw.text((2, y + 1), f"{Path(r.photo).stem} / {r.style}: photo | fast {r.fast['total']:.3g} | "
                              f"gatys {r.gatys['total']:.3g} (ratio {r.ratio:.2f})", fill="black")
        x = 0
        for tile in row:
            sheet.paste(tile, (x, y + caption_height))
            x += tile.width + gap
        y += max(t.height for t in row) + caption_height + gap
    return sheet
