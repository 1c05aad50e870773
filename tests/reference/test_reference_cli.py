"""The reference commands write their PNGs; bad input exits 2 with one line on stderr."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from support import make_checkpoint
from reference_support import CONTENT, STYLES, needs_images, needs_vgg, one_thread, weights_path  # noqa: F401
from styletrain.cli import main

pytestmark = [needs_vgg, needs_images]

PHOTO = str(CONTENT / "chicago.jpg")
MOSAIC = str(STYLES / "mosaic.jpg")


def vgg() -> list[str]:
    return ["--vgg-weights", str(weights_path()), "--no-progress"]


@pytest.mark.parametrize("argv, size", [
    (["gatys", "--content", PHOTO, "--style", MOSAIC, "--style", str(STYLES / "udnie.jpg"),
      "--style-weights", "3,1", "--size", "32", "--steps", "2", "--style-size", "48"], (32, 21)),
    (["gatys", "--content", PHOTO, "--style", MOSAIC, "--size", "48", "--steps", "1", "--scales", "2",
      "--preserve-color", "--optimizer", "adam"], (48, 32)),
    (["texture", "--style", MOSAIC, "--width", "40", "--height", "32", "--steps", "2", "--style-size", "48"], (40, 32)),
    (["deepdream", "--input", PHOTO, "--size", "32", "--steps", "1", "--octaves", "2", "--layer", "relu2_2"], (32, 21)),
    (["invert", "--input", PHOTO, "--size", "32", "--steps", "2", "--layer", "relu1_2", "--layer", "relu2_2"],
     (32 * 3 + 8, 21)),
    (["visualize", "--layer", "relu2_2", "--channel", "1,2", "--size", "24", "--steps", "2"], (24 * 2 + 4, 24)),
    (["visualize", "--filters"], (8 * 26 + 2, 8 * 26 + 2)),
    (["visualize", "--layer", "relu2_2", "--channel", "3", "--photos", str(CONTENT), "--top", "2",
      "--photo-size", "32"], (14 * 2 + 2, 14)),
    (["attribute", "--input", PHOTO, "--size", "32", "--layer", "relu2_2", "--channel", "4"], (32 * 2 + 4, 21)),
    (["attribute", "--input", PHOTO, "--size", "32", "--method", "guided", "--layer", "relu2_2"], (32 * 2 + 4, 21)),
    (["attribute", "--input", PHOTO, "--size", "32", "--layer", "relu2_2", "--unit", "0.5,0.5"], (32 * 2 + 4, 21)),
    (["attribute", "--input", PHOTO, "--size", "32", "--method", "gradcam", "--layer", "relu3_3",
      "--cam-layer", "relu2_2", "--channel", "0"], (32 * 2 + 4, 21)),
    (["attribute", "--input", PHOTO, "--size", "32", "--method", "occlusion", "--window", "8", "--stride", "8",
      "--layer", "relu2_2"], (32 * 2 + 4, 21)),
])
def test_commands_write_images(tmp_path, argv, size) -> None:
    out = tmp_path / "out.png"
    assert main([*argv, "--output", str(out), *vgg()]) == 0
    with Image.open(out) as image:
        assert image.size == size


def test_attribute_a_fast_net_region_and_a_classifier(tmp_path) -> None:
    from torchvision.models import resnet18

    ckpt = make_checkpoint(tmp_path / "multi.ckpt", ["candy", "mosaic"])
    out = tmp_path / "region.png"
    assert main(["attribute", "--input", PHOTO, "--size", "32", "--checkpoint", str(ckpt), "--style", "mosaic",
                 "--region", "0,0,8,8", "--method", "gradcam", "--output", str(out)]) == 0
    assert out.is_file()
    weights = tmp_path / "resnet18.pth"
    torch.save(resnet18().state_dict(), weights)
    out = tmp_path / "class.png"
    assert main(["attribute", "--input", PHOTO, "--size", "32", "--classifier", "resnet18", "--classifier-weights",
                 str(weights), "--class", "tabby", "--method", "gradcam", "--output", str(out)]) == 0
    assert out.is_file()


def test_evaluate_writes_table_json_and_grid(tmp_path, capsys) -> None:
    ckpt = make_checkpoint(tmp_path / "multi.ckpt", ["candy", "mosaic", "identity"])
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "chicago.jpg").write_bytes((CONTENT / "chicago.jpg").read_bytes())
    out_json, out_grid = tmp_path / "eval.json", tmp_path / "new" / "folder" / "grid.png"  # folders are made
    assert main(["evaluate", "--checkpoint", str(ckpt), "--content-dir", str(photos), "--style-dir", str(STYLES),
                 "--style", "mosaic", "--steps", "1", "--size", "32", "--json", str(out_json),
                 "--grid", str(out_grid), *vgg()]) == 0
    report = json.loads(out_json.read_text())
    (row,) = report["rows"]
    assert row["style"] == "mosaic" and row["ratio"] == pytest.approx(row["fast"]["total"] / row["gatys"]["total"])
    assert set(report["identity_mean_abs_diff"]) == {str(photos / "chicago.jpg")}
    printed = capsys.readouterr().out
    assert "mosaic" in printed and "identity row (strength 0), mean |diff| from the photo: chicago.jpg" in printed
    assert out_grid.is_file()


@pytest.mark.parametrize("argv, message", [
    (["gatys", "--content", "missing.jpg", "--style", MOSAIC], "image not found: missing.jpg"),
    (["gatys", "--content", PHOTO, "--style", MOSAIC, "--style-weights", "1,2"],
     "give one style weight per style image (1); got 2"),
    (["gatys", "--content", PHOTO, "--style", MOSAIC, "--output", "out.gif"], "cannot write out.gif"),
    (["deepdream", "--input", PHOTO, "--layer", "relu9_9"], "unknown vgg16 layer(s) ['relu9_9']"),
    (["visualize", "--layer", "relu2_2", "--channel", "500"], "channel must be in 0..127 for relu2_2; got 500"),
    (["invert", "--input", PHOTO, "--layer", "fc7"], "unknown vgg16 layer(s) ['fc7']"),
    (["attribute", "--input", PHOTO, "--layer", "relu2_2", "--channel", "999"], "target must be in 0..127; got 999"),
    (["attribute", "--input", PHOTO, "--classifier", "resnet18"], "--classifier needs --classifier-weights"),
    (["attribute", "--input", PHOTO, "--unit", "2,0.5"], "unit needs two fractions FY,FX in [0, 1]"),
    (["evaluate", "--checkpoint", "missing.ckpt", "--content-dir", str(CONTENT)], "checkpoint not found"),
    (["texture", "--style", MOSAIC, "--width", "100000"],
     "the texture would be 100000 px on its longer side; the most is 4096 px"),
    (["gatys", "--content", PHOTO, "--style", MOSAIC, "--style-scale", "200"],
     "the style image (--style-scale or --style-size) would be 6400 px on its longer side"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message) -> None:
    if "--output" not in argv and argv[0] != "evaluate":
        argv = [*argv, "--output", str(tmp_path / "out.png")]
    extra = vgg() if argv[0] != "evaluate" else ["--vgg-weights", str(weights_path())]
    assert main([*argv, *extra, "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {message}" in err
    assert not (tmp_path / "out.png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error for a machine without CUDA")
@pytest.mark.parametrize("device, message", [("cuda", "cuda is not available here"),
                                             ("tpu", "expected cpu, cuda or cuda:N; got 'tpu'")])
def test_a_device_this_machine_lacks_is_refused_up_front(tmp_path, capsys, device, message) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["gatys", "--content", PHOTO, "--style", MOSAIC, "--output", str(tmp_path / "out.png"),
              "--device", device])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("argv", [
    ["gatys", "--content", PHOTO, "--style", MOSAIC, "--size", "32", "--steps", "2", "--scales", "2"],
    ["texture", "--style", MOSAIC, "--size", "32", "--steps", "2"],
    ["deepdream", "--input", PHOTO, "--size", "32", "--steps", "1", "--layer", "relu2_2"],
    ["invert", "--input", PHOTO, "--size", "32", "--steps", "2", "--layer", "relu2_2"],
    ["visualize", "--layer", "relu2_2", "--channel", "1", "--size", "24", "--steps", "2"],
    ["attribute", "--input", PHOTO, "--size", "32", "--method", "gradcam", "--layer", "relu3_3"],
    ["attribute", "--input", PHOTO, "--size", "32", "--method", "occlusion", "--window", "8", "--stride", "8",
     "--layer", "relu2_2"],
])
def test_commands_run_on_cuda(tmp_path, argv) -> None:
    out = tmp_path / "out.png"
    assert main([*argv, "--output", str(out), "--device", "cuda", *vgg()]) == 0 and out.is_file()
