"""``styletrain quantize``: an int8 variant that loads, runs int8 convs and stays close to fp32."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from support import write_images
from styletrain.cli import main
from styletrain.errors import UserError
from styletrain.quantize import mean_abs_diff, quantize_model, select_convs
from styletrain.runtime import load_stylizer
from styletrain.runtime.onnx_backend import CPU, OnnxStylizer, load_model, read_metadata

MEAN_ABS_DIFF = 4.0
"""Largest mean |int8 - fp32| on the 0-255 scale for the tiny random nets here (measured 0.8-2.3;
the shipped mosaic and multistyle nets measure 3.2-3.8 and 2.3-2.6, see docs/cpu.md)."""


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("calibration")
    write_images(folder, 8, size=40)
    return folder


@pytest.fixture(scope="module")
def quantized(onnx_models: dict[str, Path], photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("int8")
    out = {}
    for name in ("single", "multi"):
        source = shutil.copy(onnx_models[name], folder / f"{name}.onnx")
        out[name] = quantize_model(source, calibration_dir=photos, count=4, side=32)
    return out


def _images(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.random((2, 3, 6, 7), dtype=np.float32)  # smooth, photo-like images
    return np.ascontiguousarray(small.repeat(8, axis=2).repeat(8, axis=3))


@pytest.mark.parametrize("name", ["single", "multi"])
def test_int8_variant_loads_runs_and_is_close_to_fp32(onnx_models: dict[str, Path], quantized: dict[str, Path],
                                                      name: str) -> None:
    path = quantized[name]
    assert path.name == f"{name}.int8.onnx"
    fp32 = OnnxStylizer(onnx_models[name], providers=[CPU])
    int8 = OnnxStylizer(path, providers=[CPU])
    assert int8.variant == "int8" and fp32.variant == "fp32"
    assert int8.style_names == fp32.style_names
    x = _images()
    weights = np.eye(len(fp32.style_names), dtype=np.float32)[-1]
    expected, got = fp32.run(x, weights), int8.run(x, weights)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert 0 < mean_abs_diff(got, expected) <= MEAN_ABS_DIFF
    meta = read_metadata(load_model(path))
    variant = meta.extra["variant"]
    assert variant["name"] == "int8" and variant["source"] == f"{name}.onnx"
    assert variant["layers"] == "residual" and variant["quantized_convs"] == 2  # one residual block, 2 convs
    assert variant["calibration"]["photos"] == 4 and variant["check"]["photos"] == 4
    assert 0 < variant["check"]["mean_abs_diff_255"] <= MEAN_ABS_DIFF
    assert meta.style_names == fp32.style_names and meta.net


def test_onnxruntime_runs_the_quantised_convs_in_int8(quantized: dict[str, Path], tmp_path: Path) -> None:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(quantized["single"]), options, providers=[CPU])
    ops = [node.op_type for node in onnx.load(tmp_path / "optimized.onnx").graph.node]
    assert ops.count("QLinearConv") == 2


def test_layer_choice(onnx_models: dict[str, Path]) -> None:
    model = onnx.load(onnx_models["single"])
    residual, every = select_convs(model, "residual"), select_convs(model, "all")
    assert len(residual) == 2 and set(residual) < set(every)
    inits = {t.name: t for t in model.graph.initializer}
    wide = [n.name for n in model.graph.node if n.op_type == "Conv" and inits[n.input[1]].dims[1] >= 8]
    assert every == wide  # all convs with 8+ input channels: on width-16/32 nets, all but the first
    with pytest.raises(UserError, match="int8 layers must be one of \\['residual', 'all'\\]; got 'some'"):
        select_convs(model, "some")


def test_quantize_errors_say_what_to_do(onnx_models: dict[str, Path], quantized: dict[str, Path], photos: Path,
                                        tmp_path: Path) -> None:
    with pytest.raises(UserError, match="calibration folder not found"):
        quantize_model(onnx_models["single"], tmp_path / "x.onnx", calibration_dir=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .jpg/.jpeg/.png/.webp images in calibration folder"):
        quantize_model(onnx_models["single"], tmp_path / "x.onnx", calibration_dir=tmp_path / "empty")
    with pytest.raises(UserError, match="already a int8 variant; quantize the fp32 export"):
        quantize_model(quantized["single"], tmp_path / "x.onnx", calibration_dir=photos)
    assert not (tmp_path / "x.onnx").exists()


def test_export_quantize_command_writes_both_files(onnx_models: dict[str, Path], photos: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mosaic.onnx"
    code = main(["export", "--checkpoint", str(onnx_models["single_ckpt"]), "--output", str(out), "--no-check",
                 "--quantize", "int8", "--calibration-dir", str(photos), "--calibration-count", "3",
                 "--calibration-side", "32"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and f"wrote {tmp_path / 'mosaic.int8.onnx'}" in printed
    assert read_metadata(load_model(tmp_path / "mosaic.int8.onnx")).extra["variant"]["calibration"]["photos"] == 3
    # the variant file is chosen for NAME.onnx on request, and is not a model of its own
    assert load_stylizer(out, device="cpu", variant="int8").variant == "int8"
    assert load_stylizer(out, device="cpu", variant="fp32").variant == "fp32"


def test_quantize_command_needs_photos(onnx_models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quantize", "--model", str(onnx_models["single"])]) == 2
    assert "needs --calibration-dir DIR" in capsys.readouterr().err
    assert main(["export", "--checkpoint", "x.ckpt", "--output", "x.onnx", "--quantize", "int8"]) == 2
    assert "--quantize int8 needs --calibration-dir" in capsys.readouterr().err


def test_quantize_refuses_to_overwrite_its_source(onnx_models: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    source = Path(shutil.copy(onnx_models["single"], tmp_path / "mosaic.onnx"))
    (tmp_path / "link.onnx").symlink_to(source)
    before = source.read_bytes()
    for output in (source, tmp_path / "link.onnx", tmp_path / "." / "mosaic.onnx"):
        with pytest.raises(UserError, match=r"is the source model .*; give another --output "
                                            r"\(default: .*mosaic.int8.onnx\)"):
            quantize_model(source, output, calibration_dir=tmp_path / "missing")
    photos = write_images(tmp_path / "photos", 1)[0].parent
    assert main(["quantize", "--model", str(source), "--output", str(source), "--calibration-dir", str(photos)]) == 2
    assert "is the source model" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_calibration_dir_is_checked_before_any_work(tmp_path: Path) -> None:
    from argparse import Namespace

    from styletrain.cli.quantize import check_calibration_dir

    def check(folder: Path | None) -> None:
        check_calibration_dir(Namespace(calibration_dir=folder and str(folder), calibration_count=None))

    with pytest.raises(UserError, match="needs --calibration-dir DIR"):
        check(None)
    with pytest.raises(UserError, match="calibration folder not found"):
        check(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .jpg/.jpeg/.png/.webp images in calibration folder"):
        check(tmp_path / "empty")
    write_images(tmp_path / "photos", 1)
    check(tmp_path / "photos")


def test_export_quantize_checks_the_calibration_dir_before_exporting(single_ckpt: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Passes once ``styletrain/cli/export.py`` calls ``check_calibration_dir`` before exporting."""
    out = tmp_path / "mosaic.onnx"
    assert main(["export", "--checkpoint", str(single_ckpt), "--output", str(out), "--no-check",
                 "--quantize", "int8", "--calibration-dir", str(tmp_path / "missing")]) == 2
    assert "calibration folder not found" in capsys.readouterr().err
    assert not out.exists()


def test_an_output_that_cannot_be_written_is_refused_before_calibrating(onnx_models: dict[str, Path], photos: Path,
                                                                       single_ckpt: Path, tmp_path: Path, monkeypatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("styletrain.quantize.calibration_feeds", lambda *a: pytest.fail("calibrated before the check"))
    (tmp_path / "taken.onnx").mkdir()
    with pytest.raises(UserError, match="cannot write .*taken.onnx: it is a folder"):
        quantize_model(onnx_models["single"], tmp_path / "taken.onnx", calibration_dir=photos)
    (tmp_path / "mosaic.int8.onnx").mkdir()  # where export --quantize int8 would write the variant
    out = tmp_path / "mosaic.onnx"
    assert main(["export", "--checkpoint", str(single_ckpt), "--output", str(out), "--no-check",
                 "--quantize", "int8", "--calibration-dir", str(photos)]) == 2
    assert "mosaic.int8.onnx: it is a folder" in capsys.readouterr().err
    assert not out.exists()
