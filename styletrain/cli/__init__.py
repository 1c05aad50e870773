"""The ``styletrain`` command: one subcommand per module in this package.

Each command module has ``add_arguments(parser)`` and ``run(args) -> int`` and imports its heavy
dependencies inside ``run``, so ``styletrain --help`` stays fast. User errors (``UserError``) print
one line on stderr and exit with code 2; anything else is our bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from styletrain import __version__
from styletrain.errors import UserError

# subcommand -> (module in styletrain.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a fast style-transfer net (one style: IN; several: CIN)"),
    "stylize": ("stylize", "stylize an image with a checkpoint or an exported .onnx model"),
    "gatys": ("gatys", "style transfer by optimising pixels (Gatys et al.), the reference for fast nets"),
    "texture": ("texture", "synthesise a texture of any size from an example by Gram matching"),
    "deepdream": ("deepdream", "amplify what a VGG layer or channel sees in a photo"),
    "invert": ("invert", "reconstruct a photo from its VGG features at one or more layers"),
    "visualize": ("visualize", "show what VGG channels respond to: ascent images, filters, top patches"),
    "attribute": ("attribute", "which pixels drive a VGG channel, a classifier class or a fast net's output"),
    "evaluate": ("evaluate", "score a trained net against the Gatys optimum under its own loss settings"),
    "export": ("export", "export a checkpoint to one self-contained, parity-checked .onnx file"),
    "quantize": ("quantize", "write the int8 variant NAME.int8.onnx of an export, calibrated on photos"),
    "serve": ("serve", "serve exported .onnx models over gRPC (onnxruntime, or torch on CUDA)"),
    "client": ("client", "talk to a styletrain gRPC server: list styles, stylize an image"),
    "demo": ("demo", "a browser page for a running server: photo or webcam, model, style weight sliders"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="styletrain", description="Train fast neural style-transfer nets, "
                                     "stylize with them, serve them over gRPC, and judge them against Gatys.")
    parser.add_argument("--version", action="version", version=f"styletrain {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        command = importlib.import_module(f"styletrain.cli.{module}")
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        command.add_arguments(sub_parser)
        sub_parser.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("styletrain")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.run(args) or 0)
    except UserError as exc:
        print(f"styletrain {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"styletrain {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:  # one handler per call: main() called again in this process must not log everything twice
        logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
