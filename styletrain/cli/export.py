"""``styletrain export``: write a checkpoint as one self-contained, parity-checked ``.onnx`` file."""

from __future__ import annotations

import argparse
import sys

from styletrain.cli._args import non_negative
from styletrain.cli.quantize import add_quantize_options, check_calibration_dir, write_int8


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Defaults live in styletrain.export (not imported here: it pulls in onnx, ~1 s).
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="a styletrain checkpoint (.ckpt)")
    p.add_argument("--output", required=True, metavar="MODEL.onnx", help="the ONNX file to write")
    p.add_argument("--opset", type=opset, help="ONNX opset: 18 (the default) up to the newest this onnx knows")
    p.add_argument("--tolerance", type=non_negative(),
                   help="largest allowed |onnxruntime - torch| on the [0, 1] output (default 5e-4)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check against torch")
    p.add_argument("--quantize", choices=["int8"],
                   help="also write NAME.int8.onnx beside the output (needs --calibration-dir; "
                        "served on CPUs where it is faster, see `styletrain serve --variant`)")
    add_quantize_options(p)


def opset(text: str) -> int:
    """argparse type for ``--opset``: one the exporter writes (``styletrain.export.check_opset``; onnx is
    imported only when the option is given)."""
    from styletrain.errors import UserError
    from styletrain.export import check_opset

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    try:
        return check_opset(value)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from styletrain.errors import UserError
    from styletrain.export import ExportError, export_onnx
    from styletrain.files import check_writable
    from styletrain.runtime.onnx_backend import load_model, read_metadata
    from styletrain.runtime.variants import variant_path

    if args.quantize and not args.calibration_dir:
        raise UserError("--quantize int8 needs --calibration-dir DIR "
                        "(photos to calibrate on, e.g. the training photos)")
    if args.quantize:
        check_calibration_dir(args)
        check_writable(variant_path(Path(args.output), "int8"))

    options = {k: v for k, v in (("opset", args.opset), ("tolerance", args.tolerance)) if v is not None}
    try:
        path = export_onnx(args.checkpoint, args.output, check=not args.no_check, **options)
    except ExportError as exc:  # the exporter's fault, not the user's: exit 1, but no traceback
        print(f"styletrain export: failed: {exc}. Nothing was written. Please report this with the checkpoint "
              "and `styletrain --version`; --no-check writes the graph unchecked.", file=sys.stderr)
        return 1
    meta = read_metadata(load_model(path))
    parity = (meta.export or {}).get("parity_max_abs_diff")
    checked = f"parity max |diff| {parity:.2g}" if parity is not None else "parity not checked"
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB; styles: {', '.join(meta.style_names)}; {checked})")
    if args.quantize:
        return write_int8(str(path), None, args)
    return 0
