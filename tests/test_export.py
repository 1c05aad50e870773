"""ONNX export: graph shape and metadata, parity with torch, the export/stylize commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from styletrain.checkpoint import load_transformer
from styletrain.cli import main
from styletrain.errors import UserError
from styletrain.export import DEFAULT_TOLERANCE, ExportError, check_parity, export_onnx, write_model
from styletrain.runtime import load_stylizer
from styletrain.runtime.onnx_backend import OnnxStylizer, load_model, read_metadata

RTOL, ATOL = 1e-3, 1e-5


def _dims(value: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_graph_inputs_are_dynamic_and_norm_is_instance_norm(onnx_models: dict[str, Path]) -> None:
    model = onnx.load(onnx_models["multi"])
    inputs = {i.name: _dims(i) for i in model.graph.input}
    assert list(inputs) == ["image", "style_weights"]
    batch, channels, height, width = inputs["image"]
    assert channels == 3 and all(isinstance(d, str) for d in (batch, height, width))
    assert inputs["style_weights"] == [batch, 3]
    assert [o.name for o in model.graph.output] == ["output"]
    ops = {node.op_type for node in model.graph.node}
    assert "InstanceNormalization" in ops
    assert "BatchNormalization" not in ops
    assert not ops & {"If", "Loop", "Where"}, "the graph must not branch on weight values"
    single = onnx.load(onnx_models["single"])
    assert [i.name for i in single.graph.input] == ["image"]


def test_metadata_holds_styles_and_settings(onnx_models: dict[str, Path]) -> None:
    meta = read_metadata(load_model(onnx_models["multi"]))
    assert meta.style_names == ["candy", "mosaic", "udnie"]
    assert meta.net == {"num_styles": 3, "width": 4, "num_residuals": 1, "norm": "conditional_instance"}
    assert meta.export["opset"] == 18
    assert meta.export["parity_max_abs_diff"] <= DEFAULT_TOLERANCE


def test_weights_live_in_the_one_file(onnx_models: dict[str, Path]) -> None:
    model = onnx.load(onnx_models["multi"], load_external_data=False)
    assert model.graph.initializer
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in model.graph.initializer)
    assert sorted(p.name for p in onnx_models["dir"].iterdir()) == ["mosaic.onnx", "multi.onnx"]


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 19, 41), (3, 16, 16), (2, 33, 50)])
def test_onnx_matches_torch_at_odd_sizes_for_every_style_and_a_blend(
        onnx_models: dict[str, Path], batch: int, height: int, width: int) -> None:
    net, _ = load_transformer(onnx_models["multi_ckpt"])
    stylizer = OnnxStylizer(onnx_models["multi"])
    rng = np.random.default_rng(batch * height * width)
    x = rng.random((batch, 3, height, width), dtype=np.float32)
    for weights in [*np.eye(3, dtype=np.float32), np.array([0.2, 0.5, 0.3], dtype=np.float32)]:
        got = stylizer.run(x, weights)
        with torch.inference_mode():
            expected = net(torch.from_numpy(x), torch.from_numpy(weights)[None]).numpy()
        assert got.shape == (batch, 3, height, width)
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_single_style_parity(onnx_models: dict[str, Path]) -> None:
    net, _ = load_transformer(onnx_models["single_ckpt"])
    assert check_parity(net, onnx_models["single"], sizes=[(2, 23, 17)]) <= DEFAULT_TOLERANCE


def test_parity_check_fails_loudly_on_a_mismatch(onnx_models: dict[str, Path]) -> None:
    net, _ = load_transformer(onnx_models["multi_ckpt"])
    with torch.no_grad():
        net.blocks[-1].conv.bias.add_(0.05)  # the torch net no longer matches the export
    with pytest.raises(ExportError, match=r"differs from torch by .* \(> tolerance"):
        check_parity(net, onnx_models["multi"], sizes=[(1, 21, 35)])


def test_a_failed_parity_check_writes_nothing_and_keeps_the_old_model(multi_ckpt: Path, tmp_path: Path,
                                                                     capsys, monkeypatch) -> None:
    def mismatch(*args, **kwargs):
        raise ExportError("onnxruntime (graph) differs from torch by 0.5 (> tolerance 0.0005)")

    monkeypatch.setattr("styletrain.export.check_parity", mismatch)
    out = tmp_path / "models" / "model.onnx"
    out.parent.mkdir()
    out.write_bytes(b"the model served until now")
    code = main(["export", "--checkpoint", str(multi_ckpt), "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "differs from torch" in err and "Nothing was written" in err and "Traceback" not in err
    assert out.read_bytes() == b"the model served until now" and list(out.parent.iterdir()) == [out]


def test_export_output_must_be_onnx(multi_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"must end in \.onnx"):
        export_onnx(multi_ckpt, tmp_path / "model.pt")


def test_stylize_command_takes_an_onnx_model(onnx_models: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    assert isinstance(load_stylizer(onnx_models["multi"]), OnnxStylizer)
    code = main(["stylize", "--checkpoint", str(onnx_models["multi"]), "--input", str(tmp_path / "in.png"),
                 "--output", str(tmp_path / "out.png"), "--blend", "candy=0.7,udnie=0.3"])
    assert code == 0
    out = Image.open(tmp_path / "out.png")
    assert out.size == (45, 37)
    expected = load_stylizer(onnx_models["multi_ckpt"])(Image.open(tmp_path / "in.png"),
                                                        np.array([0.7, 0.0, 0.3], dtype=np.float32))
    # uint8 rounding of two float paths that agree to ~1e-5: at most one level apart
    assert np.abs(np.asarray(out, dtype=int) - np.asarray(expected, dtype=int)).max() <= 1


def test_an_output_that_cannot_be_written_is_refused_before_the_export(multi_ckpt: Path, tmp_path: Path,
                                                                       capsys, monkeypatch) -> None:
    monkeypatch.setattr("styletrain.checkpoint.load_transformer", lambda *a: pytest.fail("loaded before the check"))
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(UserError, match="cannot write .*d.onnx: it is a folder"):
        export_onnx(multi_ckpt, tmp_path / "d.onnx")
    capsys.readouterr()
    code = main(["export", "--checkpoint", str(multi_ckpt), "--output", str(tmp_path / "d.onnx"), "--no-check"])
    err = capsys.readouterr().err
    assert code == 2 and "it is a folder" in err and "Traceback" not in err


def test_a_failed_write_of_the_model_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=r"could not write .*file/m.onnx: .*; choose another path"):
        write_model(onnx.ModelProto(), tmp_path / "file" / "m.onnx")


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--opset", "7", f"opset must be between 18 and {onnx.defs.onnx_opset_version()}"),
    ("--opset", str(onnx.defs.onnx_opset_version() + 1), "opset must be between 18"),
    ("--opset", "18.5", "expected a whole number, got '18.5'"),
    ("--tolerance", "-1", "must be at least 0, got -1"),
    ("--tolerance", "nan", "must be at least 0, got nan"),
])
def test_opsets_the_exporter_cannot_write_and_bad_tolerances_are_refused_when_parsed(
        tmp_path: Path, capsys, option: str, value: str, message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--checkpoint", str(tmp_path / "m.ckpt"), "--output", str(tmp_path / "m.onnx"),
              option, value])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_the_metadata_records_the_opset_actually_written(multi_ckpt: Path, tmp_path: Path, monkeypatch) -> None:
    """Asked for opset 17, the exporter writes 18 (see MIN_OPSET): let it try, and read what was written."""
    monkeypatch.setattr("styletrain.export.MIN_OPSET", 1)
    model = load_model(export_onnx(multi_ckpt, tmp_path / "m.onnx", opset=17, check=False))
    written = {o.domain: o.version for o in model.opset_import}[""]
    assert read_metadata(model).export["opset"] == written == 18
