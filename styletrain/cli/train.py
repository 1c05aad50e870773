"""``styletrain train``: train a net on style images and a folder of photos, resumably."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from styletrain.cli._args import add_loss_options, duration, loss_settings, non_negative, positive
from styletrain.errors import UserError, names_text
from styletrain.loss_config import LossConfig

REQUIRED = ("style", "content_dir", "out")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options, None unless given (a given option never parses to None), so that ``run`` can
    tell them from a recipe's."""
    add_options(p)
    p.set_defaults(**dict.fromkeys(add_defaults()))


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML recipe whose keys are these options "
                   "(e.g. configs/mosaic.yaml); options on the command line override it")
    p.add_argument("--style", action="append", metavar="IMG",
                   help="style image (repeat for a multi-style net); the style is named after the file")
    p.add_argument("--content-dir", metavar="DIR", help="folder of content photos")
    p.add_argument("--out", metavar="DIR", help="output folder: last.ckpt, samples/, logs/")
    p.add_argument("--identity", action="store_true", help="multi-style nets: also train an 'identity' row "
                   "(content and TV loss only) for --strength. Experimental: instance norm hides the photo's "
                   "brightness and colours from the net, so the row gives back its shapes but not its colours")
    p.add_argument("--base", metavar="CKPT", help="add the --style images to this trained multi-style "
                   "net, training only their new scale/shift rows")
    p.add_argument("--image-size", type=positive(), default=256, help="training crop size (default 256)")
    p.add_argument("--style-size", type=positive(), default=512,
                   help="longer side at which style images are read; sets the brush-stroke scale (default 512)")
    p.add_argument("--batch-size", type=positive(), default=4)
    p.add_argument("--max-steps", type=positive(), default=40_000, help="total optimizer steps, counting resumed ones")
    p.add_argument("--max-time", type=duration, metavar="DD:HH:MM:SS",
                   help="stop (and save last.ckpt) after this long, e.g. 00:12:00:00")
    p.add_argument("--lr", type=positive(float), default=1e-3)
    p.add_argument("--warmup-steps", type=non_negative(int), default=0,
                   help="ramp the learning rate up over this many steps (use with --init-from: a fresh "
                   "optimizer at full rate undoes trained weights)")
    p.add_argument("--lr-decay", choices=("none", "cosine"), default="none",
                   help="cosine: after the warm-up, bring the learning rate down to zero at --max-steps "
                   "(a final, settling stretch; set --max-steps to the steps this run will reach)")
    p.add_argument("--gradient-clip", type=positive(float), help="clip the gradient norm to this (stabilises long "
                   "multi-style runs with small batches, where a spike can collapse the net)")
    p.add_argument("--width", type=positive(), default=32, help="channels of the first layer (16: small, fast net)")
    p.add_argument("--num-residuals", type=non_negative(int), default=5)
    add_loss_options(p)
    p.add_argument("--vgg-arch", choices=("vgg16", "vgg19"), default=LossConfig.arch)
    p.add_argument("--vgg-weights", metavar="PATH", help="VGG weights file (default: $STYLETRAIN_VGG_WEIGHTS, "
                   "else torchvision's ImageNet weights); 'random' only for experiments")
    p.add_argument("--val-every", type=positive(), default=500, help="validate and write a sample grid every N steps")
    p.add_argument("--checkpoint-every", type=positive(), default=500)
    p.add_argument("--num-workers", type=non_negative(int), default=2)
    p.add_argument("--data-on-device", action="store_true", help="decode the photos once and cut training "
                   "batches on the GPU (no DataLoader workers); for fast GPUs, where decoding is the bottleneck")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--devices", default="auto")
    p.add_argument("--num-nodes", type=positive(), default=1)
    p.add_argument("--strategy", default="auto", help="e.g. ddp for several GPUs or nodes")
    p.add_argument("--precision", help="Lightning precision (default: bf16-mixed on GPUs that support bf16 and "
                   "on CPUs with AVX512-BF16 or AMX, 32-true elsewhere)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on for GPUs and for bf16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the net and the loss network "
                   "(minutes of compilation first; see benchmarks/RESULTS.md for when it pays)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if OUT/last.ckpt exists")
    p.add_argument("--init-from", metavar="CKPT", help="start from this checkpoint's net weights (same styles and "
                   "net; a narrower net is widened to --width if that is a multiple of its width, with the same "
                   "output) when OUT/last.ckpt does not exist; optimizer and steps start afresh")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seed", type=int, default=0)


def _apply_config(args: argparse.Namespace) -> None:
    """Fill the options not given on the command line from the YAML recipe, then from the defaults.

    Each recipe value goes through its option's argparse type and choices, so that it is read (and
    refused) exactly as the same value on the command line would be."""
    defaults = add_defaults()
    config = args.config
    recipe = {}
    if config is not None:
        try:
            recipe = yaml.load(config.read_text(), Loader=_RecipeLoader) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"could not read recipe {config}: {exc}") from None
        if not isinstance(recipe, dict):
            raise UserError(f"recipe {config} must map option names to values, one a line (e.g. 'lr: 0.001')")
    options = _Options()
    for key, value in recipe.items():
        key = str(key)
        attr = key.replace("-", "_")
        if attr not in defaults:
            raise UserError(f"unknown option {key!r} in {config}")
        if getattr(args, attr) is None and value is not None:
            setattr(args, attr, _recipe_value(config, key, value, options.actions[attr], attr in options.repeatable))
            _check_recipe_paths(config, key, getattr(args, attr))
    for attr, value in defaults.items():
        if getattr(args, attr) is None:
            setattr(args, attr, value)


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but ``01:00:00:00`` stays the text typed (YAML 1.1 reads it as the base-60
    number 216000), so that a recipe's ``max-time`` means what it does on the command line."""


def _colons_as_text(construct: Callable[[yaml.SafeLoader, yaml.Node], Any]) -> Callable[..., Any]:
    """``construct`` (PyYAML's int or float) for scalars without a colon; those with one stay text."""
    def construct_number(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        text = loader.construct_scalar(node)
        return text if ":" in text else construct(loader, node)

    return construct_number


_RecipeLoader.add_constructor("tag:yaml.org,2002:int", _colons_as_text(yaml.SafeLoader.construct_yaml_int))
_RecipeLoader.add_constructor("tag:yaml.org,2002:float", _colons_as_text(yaml.SafeLoader.construct_yaml_float))


class _Options(argparse.ArgumentParser):
    """The train options' argparse actions by attribute name, and which ones repeat (``action="append"``):
    what a recipe value must be parsed with (argparse keeps its list of actions private)."""

    def __init__(self) -> None:
        self.actions: dict[str, argparse.Action] = {}
        self.repeatable: set[str] = set()
        super().__init__()
        add_options(self)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.actions[action.dest] = action
        if kwargs.get("action") == "append":
            self.repeatable.add(action.dest)
        return action


def _recipe_value(config: Path, key: str, value: Any, action: argparse.Action, repeatable: bool) -> Any:
    """A recipe's ``value`` of option ``key`` as the command line would parse it: ``lr: 1e-4`` (a string
    to PyYAML) becomes a float and ``image-size: 0`` is refused. A repeatable option takes a list too."""
    if action.nargs == 0:  # a flag: --data-on-device, or --channels-last / --no-channels-last
        if not isinstance(value, bool):
            raise UserError(f"{key} in {config}: must be true or false; got {value!r}")
        return value
    if repeatable:
        return [_recipe_item(config, key, item, action) for item in (value if isinstance(value, list) else [value])]
    return _recipe_item(config, key, value, action)


def _recipe_item(config: Path, key: str, value: Any, action: argparse.Action) -> Any:
    """One recipe value through the option's ``type`` and ``choices``, as its text on the command line."""
    if isinstance(value, (list, dict)):
        raise UserError(f"{key} in {config}: expected one value, got a {'list' if isinstance(value, list) else 'map'}")
    text = str(value)
    try:
        parsed = action.type(text) if action.type is not None else text
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"{key} in {config}: {exc}") from None
    except (TypeError, ValueError):
        raise UserError(f"{key} in {config}: invalid value {text!r}") from None
    if action.choices is not None and parsed not in action.choices:
        raise UserError(f"{key} in {config}: must be one of {names_text(action.choices)}; got {text!r}")
    return parsed


RECIPE_PATHS = ("style", "content-dir", "init-from")
"""Recipe options that name files or folders which must exist before training starts."""


def _check_recipe_paths(config: Path, key: str, value: str | list[str]) -> None:
    """Refuse a recipe path that is missing from here, saying where relative paths are read from."""
    if key not in RECIPE_PATHS:
        return
    for path in value if isinstance(value, list) else [value]:
        if not Path(path).is_absolute() and not Path(path).exists():
            raise UserError(f"{config}: {key} {path} not found from {Path.cwd()}; a recipe's relative paths are "
                            "read from the working directory (run the project's recipes from its root)")


def add_defaults() -> dict:
    """Every option's default value, by attribute name."""
    return vars(_Options().parse_args([]))


def run(args: argparse.Namespace) -> int:
    _apply_config(args)
    missing = [f"--{name.replace('_', '-')}" for name in REQUIRED if not getattr(args, name)]
    if missing:
        raise UserError(f"missing {', '.join(missing)}")
    for path in args.style:
        if not Path(path).is_file():
            raise UserError(f"style image not found: {path}")

    import torch

    from styletrain.data import PhotoDataModule
    from styletrain.module import StyleTransferModule
    from styletrain.train import TrainerOptions, default_precision, fit

    gpu = args.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    precision = args.precision or default_precision(args.accelerator)
    module = StyleTransferModule(
        [str(p) for p in args.style], style_size=args.style_size, width=args.width,
        num_residuals=args.num_residuals, lr=args.lr, warmup_steps=args.warmup_steps, lr_decay=args.lr_decay,
        **loss_settings(args),
        vgg_arch=args.vgg_arch,
        vgg_weights=args.vgg_weights,
        channels_last=(gpu or precision.startswith("bf16")) if args.channels_last is None else args.channels_last,
        compile=args.compile,
        base_checkpoint=args.base, identity=args.identity, recipe=str(args.config) if args.config else None,
    )
    data = PhotoDataModule(args.content_dir, image_size=args.image_size, batch_size=args.batch_size,
                           num_workers=args.num_workers, seed=args.seed, on_device=args.data_on_device)
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    options = TrainerOptions(
        max_steps=args.max_steps, max_time=args.max_time, accelerator=args.accelerator, devices=devices,
        num_nodes=args.num_nodes, strategy=args.strategy, precision=precision,
        gradient_clip_val=args.gradient_clip,
        val_every=args.val_every, checkpoint_every=args.checkpoint_every,
        progress=not args.no_progress, seed=args.seed,
    )
    last = fit(module, data, args.out, options, resume=not args.no_resume, init_from=args.init_from)
    print(f"wrote {last}")
    return 0
