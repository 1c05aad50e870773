"""The feedforward transformer network (Johnson et al. 2016) and its norm layers, chosen by name.

Changes from the paper, each for a reason: reflection padding (no dark borders), nearest upsample +
conv instead of transposed convolution (no checkerboard, Odena et al. 2016), instance norm instead of
batch norm (Ulyanov et al. 2016), and internal padding to a multiple of 4 so any input size works.

Every norm layer has ``forward(x, style_weights)`` with weights (B, N) or None; a norm is built
from the registry ``NORMS`` by name (``register_norm`` adds one), so a new normalisation never
touches the net's callers. A multi-style net uses conditional instance norm (Dumoulin et al. 2017).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from styletrain.metadata import legacy_norm

NormFactory = Callable[[int, int], nn.Module]
"""``factory(num_features, num_styles)`` -> a module with ``forward(x, style_weights)``; it raises
``ValueError`` for a style count it cannot hold."""

NORMS: dict[str, NormFactory] = {}
"""Norm layers by the name stored in a net's config."""

Factory = TypeVar("Factory", bound=NormFactory)


def register_norm(name: str) -> Callable[[Factory], Factory]:
    """Class decorator: make a norm layer available to ``TransformerNet(norm=name)``."""

    def register(factory: Factory) -> Factory:
        NORMS[name] = factory
        return factory

    return register


def build_norm(name: str, num_features: int, num_styles: int) -> nn.Module:
    """The norm layer registered as ``name``, for ``num_features`` channels and ``num_styles`` styles."""
    if name not in NORMS:
        raise ValueError(f"unknown norm {name!r}; choose from {sorted(NORMS)} or add one with register_norm")
    return NORMS[name](num_features, num_styles)


@register_norm("instance")
class InstanceNorm2d(nn.InstanceNorm2d):
    """Instance norm with one learned (scale, shift): a single-style net. Style weights are ignored."""

    def __init__(self, num_features: int, num_styles: int = 1) -> None:
        if num_styles != 1:
            raise ValueError(f"an instance-norm net has one style; got num_styles={num_styles} "
                             "(use norm='conditional_instance' for several)")
        super().__init__(num_features, affine=True, track_running_stats=False)

    def forward(self, x: Tensor, style_weights: Tensor | None = None) -> Tensor:
        return super().forward(x)


@register_norm("conditional_instance")
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

    def forward(self, x: Tensor, style_weights: Tensor | None = None) -> Tensor:
        if style_weights is None:
            if self.num_styles != 1:
                raise ValueError(f"this norm holds {self.num_styles} styles: pass style_weights (B, N)")
            style_weights = self.scale.new_ones(x.shape[0], 1)
        w = style_weights.to(self.scale.dtype)
        scale = (w @ self.scale)[:, :, None, None]
        shift = (w @ self.shift)[:, :, None, None]
        return self.norm(x) * scale.to(x.dtype) + shift.to(x.dtype)

    def add_styles(self, extra: int) -> None:
        """Append ``extra`` style rows, each the mean of the existing rows; only they will train.

        Every parameter of this layer stays trainable, but the gradients of the old rows are zeroed,
        so an optimizer without weight decay leaves the old styles bit-identical.
        """
        if extra < 1:
            raise ValueError(f"extra must be at least 1; got {extra}")
        old = self.num_styles
        for name in ("scale", "shift"):
            rows = getattr(self, name).detach()
            grown = nn.Parameter(torch.cat([rows, rows.mean(0, keepdim=True).expand(extra, -1)]))
            grown.register_hook(lambda g: torch.cat([torch.zeros_like(g[:old]), g[old:]]))
            setattr(self, name, grown)


class _Block(nn.Module):
    """Reflection-padded conv, then a norm layer and ReLU where asked for."""

    def __init__(self, cin: int, cout: int, kernel: int, *, stride: int = 1, upsample: bool = False,
                 norm: str | None, num_styles: int = 1, relu: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride)
        self.norm = None if norm is None else build_norm(norm, cout, num_styles)
        self.relu = nn.ReLU() if relu else None  # a module (no weights): guided backprop hooks it

    def forward(self, x: Tensor, style_weights: Tensor | None) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.conv(self.pad(x))
        if self.norm is not None:
            x = self.norm(x, style_weights)
        return self.relu(x) if self.relu is not None else x


class _Residual(nn.Module):
    def __init__(self, channels: int, **norm: Any) -> None:
        super().__init__()
        self.a = _Block(channels, channels, 3, **norm)
        self.b = _Block(channels, channels, 3, relu=False, **norm)

    def forward(self, x: Tensor, style_weights: Tensor | None) -> Tensor:
        return x + self.b(self.a(x, style_weights), style_weights)


class TransformerNet(nn.Module):
    """Johnson-style image transformer: 9x9 conv, two stride-2 downsamplings, residual blocks,
    two nearest-upsample convs, 9x9 conv to RGB.

    ``width`` is the channel count of the first layer (32 in the paper; 16 gives a ~4x cheaper net).
    ``norm`` names a registered norm layer (default: ``"instance"`` for one style,
    ``"conditional_instance"`` for several); ``conditional`` is the old configs' way to say it.
    ``forward(image, style_weights)`` takes weights (B, N) for any net; a multi-style net needs them.
    Input and output are RGB in [0, 1] of any size (side >= ``styletrain.metadata.MIN_SIDE``); in
    eval mode the output is clamped to [0, 1].
    """

    def __init__(self, num_styles: int = 1, *, width: int = 32, num_residuals: int = 5,
                 norm: str | None = None, conditional: bool | None = None) -> None:
        super().__init__()
        if num_styles < 1:
            raise ValueError(f"num_styles must be at least 1; got {num_styles}")
        if conditional is not None:
            if norm is not None and norm != legacy_norm(conditional):
                raise ValueError(f"norm={norm!r} contradicts conditional={conditional}; give only norm")
            norm = legacy_norm(conditional)
        self.norm = norm or ("conditional_instance" if num_styles > 1 else "instance")
        self.num_styles, self.width, self.num_residuals = num_styles, width, num_residuals
        c1, c2, c3 = width, 2 * width, 4 * width
        norm_args = {"norm": self.norm, "num_styles": num_styles}
        self.blocks = nn.ModuleList([
            _Block(3, c1, 9, **norm_args),
            _Block(c1, c2, 3, stride=2, **norm_args),
            _Block(c2, c3, 3, stride=2, **norm_args),
            *[_Residual(c3, **norm_args) for _ in range(num_residuals)],
            _Block(c3, c2, 3, upsample=True, **norm_args),
            _Block(c2, c1, 3, upsample=True, **norm_args),
            _Block(c1, 3, 9, norm=None, relu=False),
        ])

    def config(self) -> dict[str, Any]:
        """Constructor arguments, stored with checkpoints and exported models."""
        return {"num_styles": self.num_styles, "width": self.width, "num_residuals": self.num_residuals,
                "norm": self.norm}

    @property
    def last_residual(self) -> str:
        """Module name of the last residual block (the last downsampling conv without residuals):
        the deepest spatial features, Grad-CAM's usual layer in a fast net."""
        return f"blocks.{2 + self.num_residuals}"

    def norm_layers(self) -> list[nn.Module]:
        """Every norm layer, in order."""
        return [block.norm for block in self.modules() if isinstance(block, _Block) and block.norm is not None]

    def add_styles(self, extra: int) -> None:
        """Grow the net by ``extra`` styles and freeze everything but the new styles' parameters.

        Needs a norm with ``add_styles`` (conditional instance norm); the new rows start at the mean
        of the old ones and the old styles stay bit-identical while the new ones train.
        """
        norms = self.norm_layers()
        if not all(hasattr(n, "add_styles") for n in norms):
            raise ValueError(f"a net with {self.norm!r} norm cannot learn new styles; only a multi-style "
                             "(conditional_instance) net can")
        self.requires_grad_(False)
        for norm in norms:
            norm.add_styles(extra)
        self.num_styles += extra

    def forward(self, image: Tensor, style_weights: Tensor | None = None) -> Tensor:
        if style_weights is None:
            if self.num_styles > 1:
                raise ValueError(f"this net holds {self.num_styles} styles: pass style_weights (B, N)")
        else:
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


def widen(net: TransformerNet, width: int, *, noise: float = 0.25,
          generator: torch.Generator | None = None) -> TransformerNet:
    """The same function as ``net`` at ``width`` channels, a multiple of its own (Net2WiderNet,
    Chen et al. 2016): a trained narrow net starts a wide one without losing what it learned.

    Every channel is copied ``width // net.width`` times, norm parameters with it, and each next
    layer's weights on the copies are split in random shares that sum to one (``noise`` sets their
    spread): the output is unchanged, while the copies get different gradients and so can diverge.
    """
    if width % net.width or width < net.width:
        raise ValueError(f"can widen a width-{net.width} net only to a multiple of {net.width}; got {width}")
    wide = TransformerNet(**{**net.config(), "width": width}).to(next(net.parameters()))  # its dtype, device
    copies = width // net.width
    pairs = zip((m for m in net.modules() if isinstance(m, _Block)),
                (m for m in wide.modules() if isinstance(m, _Block)), strict=True)
    with torch.no_grad():
        for old, new in pairs:
            (cout, cin), (old_out, old_in) = new.conv.weight.shape[:2], old.conv.weight.shape[:2]
            take_out, take_in = torch.arange(cout) % old_out, torch.arange(cin) % old_in  # copy c of j: c * old + j
            weight = old.conv.weight[take_out][:, take_in]
            if cin > old_in:
                shares = 1 + noise * (2 * torch.rand(cout, copies, old_in, generator=generator).to(weight) - 1)
                weight = weight * (shares / shares.sum(1, keepdim=True)).reshape(cout, cin, 1, 1)
            new.conv.weight.copy_(weight)
            new.conv.bias.copy_(old.conv.bias[take_out])
            if old.norm is not None:
                wide_params = dict(new.norm.named_parameters())
                for name, param in old.norm.named_parameters():
                    if param.shape[-1] != old_out or wide_params[name].shape[-1] != cout:
                        raise ValueError(f"cannot widen a {net.norm!r} norm: its {name!r} is not per channel")
                    wide_params[name].copy_(param[..., take_out])
    return wide.train(net.training)
