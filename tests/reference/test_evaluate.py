"""``evaluate``: fast net vs Gatys under the checkpoint's own loss settings."""

from __future__ import annotations

from dataclasses import replace

import pytest
from PIL import Image

from support import make_checkpoint
from reference_support import CONTENT, STYLES, needs_images, needs_vgg, one_thread, weights_path  # noqa: F401
from styletrain.checkpoint import load_transformer, save_transformer
from styletrain.errors import UserError
from styletrain.losses import LossConfig
from styletrain.metadata import ModelMetadata
from styletrain.reference.evaluate import evaluate, format_table, grid, identity_fidelity, style_paths

pytestmark = [needs_vgg, needs_images]


@pytest.fixture
def trained(tmp_path):
    """A tiny two-style net with the metadata training writes: loss settings, style paths and size."""
    net, meta = load_transformer(make_checkpoint(tmp_path / "tiny.ckpt", ["mosaic", "udnie"]))
    return net, replace(meta, loss=LossConfig().to_dict(), style_size=64,
                        style_images=[str(STYLES / "mosaic.jpg"), str(STYLES / "udnie.jpg")])


def test_rows_hold_both_losses_and_their_ratio(tmp_path, trained) -> None:
    ckpt = save_transformer(*trained, tmp_path / "net.ckpt")
    photo = CONTENT / "chicago.jpg"
    start = evaluate(ckpt, [photo], styles=["udnie", "udnie"], steps=0, size=32, weights=weights_path())
    assert len(start) == 1  # a style named twice is scored once
    (row,) = evaluate(ckpt, [photo], styles=["udnie"], steps=4, size=32, weights=weights_path())
    assert (row.photo, row.style) == (str(photo), "udnie")
    assert set(row.fast) == set(row.gatys) == {"content", "style", "tv", "total"}
    assert row.ratio == pytest.approx(row.fast["total"] / row.gatys["total"])
    assert row.gatys["total"] < start[0].gatys["total"]  # L-BFGS improved on the photo itself
    assert row.fast == start[0].fast
    assert row.images["fast"].shape == row.images["gatys"].shape == row.images["content"].shape
    assert "udnie" in format_table([row])
    sheet = grid([row, row])
    assert sheet.width >= 3 * 32 and sheet.height >= 2 * row.images["content"].shape[-2]


def test_a_photo_too_thin_at_the_size_is_refused_before_any_work(tmp_path, trained, monkeypatch) -> None:
    ckpt = save_transformer(*trained, tmp_path / "net.ckpt")
    Image.new("RGB", (4000, 100)).save(tmp_path / "panorama.png")
    monkeypatch.setattr("styletrain.reference.evaluate.PerceptualLoss", None)  # nothing may be built first
    with pytest.raises(UserError, match=r"panorama.png: size 256 shrinks the 4000x100 image to 256x6, but both "
                                        r"sides must be at least 16 px; use a size of at least 640$"):
        evaluate(ckpt, [CONTENT / "chicago.jpg", tmp_path / "panorama.png"], size=256, weights=weights_path())
    Image.new("RGB", (12, 40)).save(tmp_path / "small.png")  # too small already, no shrinking needed
    with pytest.raises(UserError, match=r"small.png is 12x40; both sides must be at least 16 px"):
        evaluate(ckpt, [CONTENT / "chicago.jpg", tmp_path / "small.png"], size=256, weights=weights_path())


def test_a_photo_that_cannot_be_decoded_is_refused_before_any_scoring(tmp_path, trained, monkeypatch) -> None:
    ckpt = save_transformer(*trained, tmp_path / "net.ckpt")
    data = (CONTENT / "chicago.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])  # the header is whole: only a decode finds it
    monkeypatch.setattr("styletrain.reference.evaluate.PerceptualLoss", None)  # nothing may be built first
    monkeypatch.setattr("styletrain.reference.evaluate.optimize", None)
    with pytest.raises(UserError, match=r"cut.jpg could not be decoded: image file is truncated"):
        evaluate(ckpt, [CONTENT / "chicago.jpg", tmp_path / "cut.jpg"], size=32, weights=weights_path())


def test_a_variant_of_another_net_is_refused(tmp_path, trained, monkeypatch) -> None:
    from styletrain.runtime.torch_backend import TorchStylizer

    ckpt = save_transformer(*trained, tmp_path / "net.ckpt")  # mosaic, udnie; width 4
    other_styles = TorchStylizer.from_checkpoint(make_checkpoint(tmp_path / "s.ckpt", ["candy", "udnie"]))
    other_net = TorchStylizer.from_checkpoint(make_checkpoint(tmp_path / "w.ckpt", ["mosaic", "udnie"], width=8))
    monkeypatch.setattr("styletrain.reference.evaluate.PerceptualLoss", None)  # refused before any work
    with pytest.raises(UserError, match=r"variant candy.onnx holds styles 'candy', 'udnie', but the checkpoint "
                                        r"holds 'mosaic', 'udnie'; give an export of this checkpoint"):
        evaluate(ckpt, [CONTENT / "amber.jpg"], variants={"candy.onnx": other_styles}, weights=weights_path())
    with pytest.raises(UserError, match=r"variant wide.onnx is a net .*'width': 8.*, but the checkpoint's is "
                                        r".*'width': 4"):
        evaluate(ckpt, [CONTENT / "amber.jpg"], variants={"wide.onnx": other_net}, weights=weights_path())


def test_scores_use_the_checkpoints_loss_weights(tmp_path, trained) -> None:
    net, meta = trained
    plain = save_transformer(net, meta, tmp_path / "plain.ckpt")
    heavy = save_transformer(net, replace(meta, loss=LossConfig(style_weight=50.0).to_dict()), tmp_path / "heavy.ckpt")
    args = dict(styles=["mosaic"], steps=0, size=32, weights=weights_path())
    (a,) = evaluate(plain, [CONTENT / "amber.jpg"], **args)
    (b,) = evaluate(heavy, [CONTENT / "amber.jpg"], **args)
    assert b.fast["style"] == pytest.approx(10 * a.fast["style"], rel=1e-5)
    assert b.fast["content"] == pytest.approx(a.fast["content"], rel=1e-5)


def test_style_images_are_found_by_name(tmp_path) -> None:
    net, meta = load_transformer(make_checkpoint(tmp_path / "multi.ckpt", ["candy", "mosaic", "udnie"]))
    ckpt = save_transformer(net, replace(meta, style_size=64), tmp_path / "net.ckpt")  # no style paths recorded
    with pytest.raises(UserError, match="style image for 'candy' not found; pass --style-dir DIR holding candy.jpg"):
        evaluate(ckpt, [CONTENT / "amber.jpg"], steps=0, size=32, weights=weights_path())
    rows = evaluate(ckpt, [CONTENT / "amber.jpg"], style_dir=STYLES, steps=0, size=32, weights=weights_path())
    assert [r.style for r in rows] == ["candy", "mosaic", "udnie"]
    moved = ModelMetadata(["candy"], style_images=["/elsewhere/candy.jpg"])
    with pytest.raises(UserError, match="the checkpoint says /elsewhere/candy.jpg"):
        style_paths(moved, ["candy"])
    assert style_paths(moved, ["candy"], STYLES) == {"candy": STYLES / "candy.jpg"}
    with pytest.raises(UserError, match=r"unknown style\(s\) \['starry'\]"):
        evaluate(ckpt, [CONTENT / "amber.jpg"], styles=["starry"], steps=0, weights=weights_path())


def test_the_identity_row_is_left_out_since_it_has_no_style(tmp_path) -> None:
    net, meta = load_transformer(make_checkpoint(tmp_path / "multi.ckpt", ["mosaic", "udnie", "identity"]))
    ckpt = save_transformer(net, replace(meta, style_size=64), tmp_path / "net.ckpt")
    rows = evaluate(ckpt, [CONTENT / "amber.jpg"], style_dir=STYLES, steps=0, size=32, weights=weights_path())
    assert [r.style for r in rows] == ["mosaic", "udnie"]
    with pytest.raises(UserError, match="'identity' row reproduces the photo"):
        evaluate(ckpt, [CONTENT / "amber.jpg"], styles=["identity"], style_dir=STYLES, steps=0, weights=weights_path())


def test_identity_fidelity_measures_the_identity_rows_distance_from_the_photo(tmp_path) -> None:
    import torch

    from styletrain.images import load_tensor

    ckpt = make_checkpoint(tmp_path / "multi.ckpt", ["mosaic", "identity"])
    photo = CONTENT / "amber.jpg"
    net, _ = load_transformer(ckpt)
    with torch.no_grad():
        for norm in (m for m in net.modules() if hasattr(m, "shift") and hasattr(m, "scale")):
            norm.scale[1].zero_()  # identity row: every norm outputs its shift only...
            norm.shift[1].zero_()  # ...which is 0, so the output is a constant image
    ckpt = save_transformer(net, load_transformer(ckpt)[1], tmp_path / "flat.ckpt")
    (diff,) = identity_fidelity(ckpt, [photo], size=32).values()
    content = load_tensor(photo, max_side=32)
    with torch.no_grad():
        flat = net.eval()(content, torch.tensor([[0.0, 1.0]]))
    assert flat.std(dim=(2, 3)).max() < 1e-6  # a flat image (one colour)
    assert diff == pytest.approx(float((content * 255 - flat * 255).abs().mean()), abs=1.0)
    assert identity_fidelity(make_checkpoint(tmp_path / "plain.ckpt", ["mosaic", "udnie"]), [photo]) == {}


def test_variants_are_scored_against_the_same_gatys_result(tmp_path, trained) -> None:
    from styletrain.runtime.torch_backend import TorchStylizer

    ckpt = save_transformer(*trained, tmp_path / "net.ckpt")
    same = TorchStylizer.from_checkpoint(ckpt)
    bf16 = TorchStylizer.from_checkpoint(ckpt, precision="bfloat16")
    (row,) = evaluate(ckpt, [CONTENT / "amber.jpg"], styles=["udnie"], steps=0, size=32, weights=weights_path(),
                      variants={"same": same, "bf16": bf16})
    assert set(row.variants) == {"same", "bf16"}
    assert row.variants["same"]["total"] == pytest.approx(row.fast["total"], rel=1e-5)
    assert row.variants["same"]["ratio"] == pytest.approx(row.ratio, rel=1e-5)
    assert row.variants["same"]["mean_abs_diff"] == 0
    assert row.variants["bf16"]["ratio"] == pytest.approx(row.variants["bf16"]["total"] / row.gatys["total"])
    assert row.to_json()["variants"]["bf16"]["mean_abs_diff"] > 0  # bf16 rounds: not the float32 image
    table = format_table([row])
    assert "same" in table and "x1.0000 of fast, mean |diff| 0.00/255" in table
