"""Checkpoint and export metadata: the shipped files read back, round trips, old and foreign dicts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from styletrain.checkpoint import load_transformer, read_checkpoint, save_transformer
from styletrain.errors import UserError
from styletrain.metadata import FORMAT_VERSION, ModelMetadata
from styletrain.transformer import TransformerNet

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"
CHECKPOINTS = sorted(SHIPPED.glob("*.ckpt"))
EXPORTS = sorted(SHIPPED.glob("*.onnx"))


@pytest.mark.parametrize("path", CHECKPOINTS, ids=lambda p: p.name)
def test_shipped_checkpoints_read_and_round_trip(path: Path) -> None:
    stored = read_checkpoint(path)["styletrain"]
    meta = ModelMetadata.from_dict(stored)
    assert meta.style_names == stored["style_names"] and meta.global_step == stored["global_step"]
    assert meta.loss == stored["loss"] and meta.data == stored["data"] and meta.recipe == stored["recipe"]
    if "conditional" in stored["net"]:  # written before norms were named: read as the named norm
        assert meta.net == {**{k: v for k, v in stored["net"].items() if k != "conditional"},
                            "norm": "conditional_instance" if stored["net"]["conditional"] else "instance"}
    else:
        assert meta.net == stored["net"]
    assert ModelMetadata.from_dict(meta.to_dict()) == meta
    written = meta.to_dict()
    assert {k: v for k, v in stored.items() if k != "net"} == {k: written[k] for k in stored if k != "net"}


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.name)
def test_shipped_exports_metadata_reads(path: Path) -> None:
    props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    stored = json.loads(props["styletrain"])
    meta = ModelMetadata.from_dict(stored)
    assert meta.style_names == stored["style_names"] and meta.export["opset"] == stored["export"]["opset"]
    assert meta.net["norm"] in ("instance", "conditional_instance")
    assert ModelMetadata.from_dict(meta.to_dict()) == meta


def test_shipped_checkpoints_load_with_their_old_net_configs() -> None:
    for path in CHECKPOINTS:
        net, meta = load_transformer(path)
        assert net.num_styles == meta.num_styles
        with torch.no_grad():
            out = net(torch.rand(1, 3, 20, 20), torch.eye(net.num_styles)[:1])
        assert out.shape == (1, 3, 20, 20)


def test_missing_and_unknown_keys_are_tolerated_and_kept(tmp_path: Path) -> None:
    meta = ModelMetadata.from_dict({"style_names": ["a"], "colour_space": "rgb", "format": "styletrain"})
    assert meta.global_step == 0 and meta.loss is None and meta.train_seconds is None
    assert meta.extra == {"colour_space": "rgb"}
    assert meta.to_dict()["colour_space"] == "rgb" and "export" not in meta.to_dict()
    path = save_transformer(TransformerNet(width=4, num_residuals=1), meta, tmp_path / "net.ckpt")
    _, loaded = load_transformer(path)
    assert loaded.extra == {"colour_space": "rgb"} and loaded.net["norm"] == "instance"


def test_newer_or_foreign_metadata_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="upgrade styletrain"):
        ModelMetadata.from_dict({"style_names": ["a"], "version": FORMAT_VERSION + 1})
    with pytest.raises(UserError, match="no style_names"):
        ModelMetadata.from_dict({"net": {}})
    path = tmp_path / "new.ckpt"
    torch.save({"styletrain": {"style_names": ["a"], "version": FORMAT_VERSION + 1}, "state_dict": {}}, path)
    with pytest.raises(UserError, match=f"{path}: .*upgrade styletrain"):
        load_transformer(path)


def test_save_transformer_checks_the_style_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 style names for a net with 1 styles"):
        save_transformer(TransformerNet(width=4, num_residuals=1), ModelMetadata(["a", "b"]), tmp_path / "x.ckpt")


def test_metadata_and_loss_settings_import_without_torch() -> None:
    """The server reads metadata, and the CLI shows loss defaults, without loading torch."""
    code = ("import sys, styletrain.metadata, styletrain.loss_config; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1]).returncode == 0


def _tiny_onnx(path: Path) -> Path:
    """A valid ONNX file that is not a styletrain export."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph), path)
    return path


def test_a_model_or_photo_in_the_wrong_place_is_named_with_the_fix(tmp_path: Path) -> None:
    from PIL import Image

    from styletrain.runtime.onnx_backend import load_model

    model = _tiny_onnx(tmp_path / "model.onnx")
    renamed = _tiny_onnx(tmp_path / "model.ckpt")  # the first bytes tell, not the name
    Image.new("RGB", (20, 20)).save(tmp_path / "photo.jpg")
    (tmp_path / "notes.ckpt").write_text("hello")
    for path in (model, renamed):
        with pytest.raises(UserError, match=rf"{path.name} is an ONNX model, not a checkpoint: pass a .ckpt "
                                            r"\(styletrain train writes one\)"):
            read_checkpoint(path)
    with pytest.raises(UserError, match=r"photo.jpg is a JPEG image, not a checkpoint: pass a .ckpt"):
        read_checkpoint(tmp_path / "photo.jpg")
    with pytest.raises(UserError, match=r"notes.ckpt is not a PyTorch checkpoint"):
        load_transformer(tmp_path / "notes.ckpt")
    ckpt = save_transformer(TransformerNet(width=4, num_residuals=1), ModelMetadata(["a"]), tmp_path / "net.ckpt")
    with pytest.raises(UserError, match=r"net.ckpt is a PyTorch checkpoint, not an ONNX model: export it first "
                                        r"with `styletrain export"):
        load_model(ckpt)
    with pytest.raises(UserError, match=r"photo.jpg is a JPEG image, not an ONNX model"):
        load_model(tmp_path / "photo.jpg")
