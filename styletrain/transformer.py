"""The feedforward transformer network (Johnson et al. 2016) and conditional instance norm.

Changes from the paper, each for a reason: reflection padding (no dark borders), nearest upsample +
conv instead of transposed convolution (no checkerboard, Odena et al. 2016), instance norm instead of
batch norm (Ulyanov et al. 2016), and internal padding to a multiple of 4 so any input size works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_SIDE = 16
"""Smallest input side: below it the reflection padding of the downsampled maps fails."""


class ConditionalInstanceNorm2d(nn.Module):
    """Instance norm with N (scale, shift) pairs, one per style (Dumoulin et al. 2017).

    ``forward(x, style_weights)`` takes weights (B, N): scale = w @ scales, shift = w @ shifts, so a
    one-hot row selects a style, a convex row blends them, and each sample can have its own style.
    """

    def __init__(self, num_features: int, num_styles: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(num_features, eps=eps, affine=False, track_running_stats=False)
        self.scale = nn.Parameter(torch.ones(num_styles, num_features))
        self.shift = nn.Parameter(torch.zeros(num_styles, num_features))

    @property
    def num_styles(self) -> int:
        return self.scale.shape[0]

    def forward(self, x: Tensor, style_weights: Tensor) -> Tensor:
        w = style_weights.to(self.scale.dtype)
        scale = (w @ self.scale)[:, :, None, None]
        shift = (w @ self.shift)[:, :, None, None]
        return self.norm(x) * scale.to(x.dtype) + shift.to(x.dtype)


class _Block(nn.Module):
    """Reflection-padded conv, then (conditional) instance norm and ReLU where asked for."""

    def __init__(self, cin: int, cout: int, kernel: int, *, stride: int = 1, upsample: bool = False,
                 num_styles: int | None = 1, conditional: bool = False, relu: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride)
        if num_styles is None:
            self.norm = None
        elif conditional:
            self.norm = ConditionalInstanceNorm2d(cout, num_styles)
        else:
            self.norm = nn.InstanceNorm2d(cout, affine=True, track_running_stats=False)
        self.relu = relu

    def forward(self, x: Tensor, style_weights: Tensor | None) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.conv(self.pad(x))
        if isinstance(self.norm, ConditionalInstanceNorm2d):
            x = self.norm(x, style_weights)
        elif self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


class _Residual(nn.Module):
    def __init__(self, channels: int, **norm: object) -> None:
        super().__init__()
        self.a = _Block(channels, channels, 3, **norm)
        self.b = _Block(channels, channels, 3, relu=False, **norm)

    def forward(self, x: Tensor, style_weights: Tensor | None) -> Tensor:
        return x + self.b(self.a(x, style_weights), style_weights)


class TransformerNet(nn.Module):
    """Johnson-style image transformer: 9x9 conv, two stride-2 downsamplings, residual blocks,
    two nearest-upsample convs, 9x9 conv to RGB.

    ``width`` is the channel count of the first layer (32 in the paper; 16 gives a ~4x cheaper net).
    A net with ``conditional=True`` uses conditional instance norm over ``num_styles`` styles and
    needs ``style_weights`` (B, N) in ``forward``. Input and output are RGB in [0, 1] of any size
    (side >= ``MIN_SIDE``); in eval mode the output is clamped to [0, 1].
    """

    def __init__(self, num_styles: int = 1, *, width: int = 32, num_residuals: int = 5,
                 conditional: bool | None = None) -> None:
        super().__init__()
        conditional = num_styles > 1 if conditional is None else conditional
        if num_styles < 1 or (num_styles > 1 and not conditional):
            raise ValueError(f"an instance-norm net has one style; got num_styles={num_styles}")
        self.num_styles, self.width, self.conditional = num_styles, width, conditional
        self.num_residuals = num_residuals
        norm = {"num_styles": num_styles, "conditional": conditional}
        c1, c2, c3 = width, 2 * width, 4 * width
        self.blocks = nn.ModuleList([
            _Block(3, c1, 9, **norm),
            _Block(c1, c2, 3, stride=2, **norm),
            _Block(c2, c3, 3, stride=2, **norm),
            *[_Residual(c3, **norm) for _ in range(num_residuals)],
            _Block(c3, c2, 3, upsample=True, **norm),
            _Block(c2, c1, 3, upsample=True, **norm),
            _Block(c1, 3, 9, num_styles=None, relu=False),
        ])

    def config(self) -> dict:
        """Constructor arguments, stored with checkpoints and exported models."""
        return {"num_styles": self.num_styles, "width": self.width,
                "num_residuals": self.num_residuals, "conditional": self.conditional}

    def forward(self, image: Tensor, style_weights: Tensor | None = None) -> Tensor:
        if self.conditional:
            if style_weights is None:
                raise ValueError(f"this net holds {self.num_styles} styles: pass style_weights (B, N)")
            if style_weights.shape[-1] != self.num_styles:
                raise ValueError(
                    f"style_weights must have {self.num_styles} columns; got {tuple(style_weights.shape)}"
                )
            style_weights = style_weights.expand(image.shape[0], -1)
        h, w = image.shape[-2:]
        x = F.pad(image, (0, (-w) % 4, 0, (-h) % 4), mode="reflect")
        for block in self.blocks:
            x = block(x, style_weights)
        x = x[..., :h, :w]
        return x if self.training else x.clamp(0.0, 1.0)
