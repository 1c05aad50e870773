"""``styletrain quantize``: write the int8 variant ``NAME.int8.onnx`` of an fp32 export."""

from __future__ import annotations

import argparse


def add_quantize_options(p: argparse.ArgumentParser) -> None:
    """Calibration options, shared with ``styletrain export --quantize int8``.

    Defaults live in ``styletrain.quantize`` (not imported here: it pulls in onnx and onnxruntime).
    """
    p.add_argument("--calibration-dir", metavar="DIR",
                   help="photos to calibrate int8 activations on, e.g. the training photos")
    p.add_argument("--calibration-count", type=int, metavar="N",
                   help="calibrate on the first N photos by name (default 32; 4 more, if present, check the result)")
    p.add_argument("--calibration-side", type=int, metavar="PX",
                   help="photos resized (short side) and centre-cropped to PX (default 256)")
    p.add_argument("--int8-layers", choices=["residual", "all"],
                   help="convs to make int8: the residual blocks' (default: within about 1%% of fp32's loss at "
                        "128 px) or all but the first (faster, about twice the error)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="MODEL.onnx", help="an fp32 export (styletrain export)")
    p.add_argument("--output", metavar="MODEL.int8.onnx", help="where to write (default: NAME.int8.onnx beside it)")
    add_quantize_options(p)


def run(args: argparse.Namespace) -> int:
    check_calibration_dir(args)
    return write_int8(args.model, args.output, args)


def check_calibration_dir(args: argparse.Namespace) -> None:
    """Refuse an unset, missing or photo-less ``--calibration-dir`` before any work (``export --quantize
    int8`` would otherwise export first, and only then say so)."""
    from styletrain.errors import UserError
    from styletrain.quantize import DEFAULT_COUNT, calibration_photos

    if not args.calibration_dir:
        raise UserError("int8 quantization needs --calibration-dir DIR (photos like the ones the model will "
                        "stylize, e.g. the training photos)")
    calibration_photos(args.calibration_dir, args.calibration_count or DEFAULT_COUNT)


def write_int8(model: str, output: str | None, args: argparse.Namespace) -> int:
    """Quantize ``model`` with the calibration options of ``args`` and print what was written."""
    from styletrain.quantize import quantize_model
    from styletrain.runtime.onnx_backend import load_model, read_metadata

    given = (("count", args.calibration_count), ("side", args.calibration_side), ("layers", args.int8_layers))
    path = quantize_model(model, output, calibration_dir=args.calibration_dir,
                          **{k: v for k, v in given if v is not None})
    variant = read_metadata(load_model(path)).extra["variant"]
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB; {variant['quantized_convs']} int8 convs; "
          f"mean |diff| vs fp32 {variant['check']['mean_abs_diff_255']:.2f}/255 on {variant['check']['photos']} "
          f"{variant['check']['of']})")
    return 0
