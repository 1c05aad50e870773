"""The ``styletrain train`` and ``stylize`` commands end to end, and their errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from styletrain.checkpoint import read_checkpoint
from styletrain.cli import build_parser, main
from styletrain.cli.train import _apply_config
from support import write_images


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (37, 29), (120, 60, 200)).save(path)
    return path


def run_error(capsys, argv) -> str:
    """Run a command expected to fail on user input; return its one-line error."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_train_then_stylize(tmp_path, photo, capsys):
    write_images(tmp_path / "photos", 5)
    style = write_images(tmp_path / "styles", 1, seed=5)[0]
    out = tmp_path / "run"
    argv = ["train", "--style", str(style), "--content-dir", str(tmp_path / "photos"), "--out", str(out),
            "--image-size", "32", "--style-size", "32", "--batch-size", "2", "--max-steps", "2", "--width", "4",
            "--num-residuals", "1", "--vgg-weights", "random", "--num-workers", "0", "--no-progress"]
    assert main(argv) == 0
    assert read_checkpoint(out / "last.ckpt")["styletrain"]["style_names"] == ["img0"]
    assert main(["stylize", "--checkpoint", str(out / "last.ckpt"), "--input", str(photo),
                 "--output", str(tmp_path / "out.png")]) == 0
    assert Image.open(tmp_path / "out.png").size == (37, 29)


def test_ctrl_c_during_train_exits_130_with_the_step_saved(tmp_path, capsys, monkeypatch):
    from styletrain.module import StyleTransferModule

    def interrupted(self, batch, batch_idx):
        raise KeyboardInterrupt

    monkeypatch.setattr(StyleTransferModule, "training_step", interrupted)
    write_images(tmp_path / "photos", 5)
    style = write_images(tmp_path / "styles", 1, seed=5)[0]
    argv = ["train", "--style", str(style), "--content-dir", str(tmp_path / "photos"), "--out", str(tmp_path / "run"),
            "--image-size", "32", "--style-size", "32", "--batch-size", "2", "--max-steps", "5", "--width", "4",
            "--num-residuals", "1", "--vgg-weights", "random", "--num-workers", "0", "--no-progress"]
    capsys.readouterr()
    assert main(argv) == 130  # the shell's code for SIGINT, not Lightning's exit(1)
    assert "styletrain train: interrupted" in capsys.readouterr().err
    assert read_checkpoint(tmp_path / "run" / "last.ckpt")["styletrain"]["global_step"] == 0


def test_train_from_yaml_recipe(tmp_path, capsys):
    write_images(tmp_path / "photos", 5)
    style = write_images(tmp_path / "styles", 1, seed=5)[0]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"style: {style}\ncontent-dir: {tmp_path / 'photos'}\nout: {tmp_path / 'run'}\n"
                      "image-size: 32\nstyle-size: 32\nbatch-size: 2\nmax-steps: 1\nwidth: 4\nnum-residuals: 1\n"
                      "vgg-weights: random\nnum-workers: 0\n")
    assert main(["train", "--config", str(recipe), "--no-progress"]) == 0
    assert read_checkpoint(tmp_path / "run" / "last.ckpt")["styletrain"]["recipe"] == str(recipe)
    recipe.write_text("colour: blue\n")
    assert "unknown option 'colour'" in run_error(capsys, ["train", "--config", str(recipe)])


def test_command_line_overrides_the_recipe_even_with_a_default_value(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "styles", 1)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("width: 16\nlr: 1.0e-4\nimage-size: 128\nstyle: styles/img0.png\n")
    args = build_parser().parse_args(["train", "--config", str(recipe), "--width", "32", "--lr", "1e-3"])
    _apply_config(args)
    assert (args.width, args.lr) == (32, 1e-3)  # given, though equal to the defaults: the command line wins
    assert (args.image_size, args.style) == (128, ["styles/img0.png"])  # from the recipe
    assert (args.batch_size, args.max_steps) == (4, 40_000)  # from the defaults


def test_a_recipe_path_missing_from_the_working_directory_says_where_paths_are_read_from(tmp_path, capsys,
                                                                                         monkeypatch):
    recipe = tmp_path / "configs" / "recipe.yaml"
    recipe.parent.mkdir()
    recipe.write_text("style: ../shared/styles/a.jpg\ncontent-dir: photos\n")
    monkeypatch.chdir(recipe.parent)  # not the root the recipe was written for
    err = run_error(capsys, ["train", "--config", str(recipe)])
    assert "style ../shared/styles/a.jpg not found from" in err and "working directory" in err


def test_recipe_values_are_parsed_like_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "styles", 2)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lr: 1e-4\nwidth: 16\nmax-time: 01:00:00:00\ndata-on-device: true\nchannels-last: false\n"
                      "lr-decay: cosine\ndevices: 1\nstyle:\n  - styles/img0.png\n  - styles/img1.png\n")
    args = build_parser().parse_args(["train", "--config", str(recipe)])
    _apply_config(args)
    assert args.lr == 1e-4 and isinstance(args.lr, float)  # PyYAML reads 1e-4 as a string
    assert args.max_time == "01:00:00:00"  # and 01:00:00:00 as the base-60 number 216000
    assert (args.width, args.data_on_device, args.channels_last, args.lr_decay) == (16, True, False, "cosine")
    assert args.devices == "1" and args.style == ["styles/img0.png", "styles/img1.png"]


def test_invalid_recipe_values_name_the_key_and_the_recipe(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    cases = {"image-size: 0": "image-size in {}: must be greater than 0, got 0",
             "lr: fast": "lr in {}: expected a number, got 'fast'",
             "batch-size: 2.5": "batch-size in {}: expected a number, got '2.5'",
             "lr-decay: linear": "lr-decay in {}: must be one of 'none', 'cosine'; got 'linear'",
             "max-time: 1h": "max-time in {}: expected DD:HH:MM:SS",
             "data-on-device: maybe": "data-on-device in {}: must be true or false; got 'maybe'",
             "width: [16, 32]": "width in {}: expected one value, got a list"}
    for text, expected in cases.items():
        recipe.write_text(text + "\n")
        assert expected.format(recipe) in run_error(capsys, ["train", "--config", str(recipe)]), text


def test_max_time_must_be_dd_hh_mm_ss(capsys):
    for given in ("1h", "10:00", "00:01:60"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train", "--max-time", given])
        err = capsys.readouterr().err
        assert f"expected DD:HH:MM:SS, e.g. 00:12:00:00 for 12 hours; got {given!r}" in err, err
    for given in ("00:12:00:00", "2:00:30:00", "100:00:00:05"):  # Lightning takes any number of days
        assert build_parser().parse_args(["train", "--max-time", given]).max_time == given


def test_stylize_blend_of_multi_style_checkpoint(tmp_path, multi_ckpt, photo):
    outs = {}
    for name, extra in {"candy": ["--style", "candy"], "blend": ["--blend", "candy=0.5,udnie=0.5"],
                        "pure": ["--blend", "candy=1,udnie=0"]}.items():
        out = tmp_path / f"{name}.png"
        args = ["stylize", "--checkpoint", str(multi_ckpt), "--input", str(photo), "--output", str(out), *extra]
        assert main(args) == 0
        outs[name] = np.asarray(Image.open(out))
    assert np.array_equal(outs["pure"], outs["candy"]) and not np.array_equal(outs["blend"], outs["candy"])


def test_stylize_strength_and_preserve_color(tmp_path, single_ckpt):
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.png"
    Image.fromarray(rng.integers(40, 220, (32, 48, 3), dtype=np.uint8)).save(photo)

    def stylize(*extra: str) -> np.ndarray:
        out = tmp_path / "out.png"
        argv = ["stylize", "--checkpoint", str(single_ckpt), "--input", str(photo), "--output", str(out), *extra]
        assert main(argv) == 0
        return np.asarray(Image.open(out), dtype=np.float64)

    original = np.asarray(Image.open(photo), dtype=np.float64)
    full, none, half = stylize(), stylize("--strength", "0"), stylize("--strength", "0.5")
    assert np.abs(none - original).max() <= 1  # a single-style net: strength blends pixels with the photo
    assert np.abs(half - (full + original) / 2).max() <= 1.5
    kept = stylize("--preserve-color")
    chroma = lambda rgb: rgb @ np.array([[0.596, 0.211], [-0.274, -0.523], [-0.322, 0.312]])  # noqa: E731
    assert np.abs(chroma(kept) - chroma(original)).mean() < np.abs(chroma(full) - chroma(original)).mean() / 3


def test_bad_inputs_get_one_line_and_exit_2(tmp_path, multi_ckpt, photo, capsys):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(photo.read_bytes()[:100])
    (tmp_path / "empty").mkdir()
    stylize = ["stylize", "--checkpoint", str(multi_ckpt), "--output", str(tmp_path / "o.png")]
    cases = {
        "not a readable": [*stylize, "--input", str(tmp_path / "notes.txt"), "--style", "candy"],
        "could not be decoded": [*stylize, "--input", str(corrupt), "--style", "candy"],
        "unknown style 'picasso'": [*stylize, "--input", str(photo), "--style", "picasso"],
        "non-negative": [*stylize, "--input", str(photo), "--blend", "candy=-1,udnie=2"],
        "sum to more than 0": [*stylize, "--input", str(photo), "--blend", "candy=0,udnie=0"],
        "image not found": [*stylize, "--input", str(tmp_path / "missing.jpg"), "--style", "candy"],
        "checkpoint not found": ["stylize", "--checkpoint", str(tmp_path / "x.ckpt"), "--input", str(photo),
                                 "--output", str(tmp_path / "o.png")],
        "no JPEG/PNG/WEBP images": ["train", "--style", str(photo), "--content-dir", str(tmp_path / "empty"),
                                    "--out", str(tmp_path / "r"), "--vgg-weights", "random"],
        "none of the 4 training photos in": ["train", "--style", str(photo), "--content-dir", str(tmp_path / "broken"),
                                             "--out", str(tmp_path / "r"), "--vgg-weights", "random"],
        "style image not found": ["train", "--style", str(tmp_path / "nope.jpg"), "--content-dir",
                                  str(tmp_path), "--out", str(tmp_path / "r")],
        "VGG weights file not found": ["train", "--style", str(photo), "--content-dir", str(tmp_path),
                                       "--out", str(tmp_path / "r"), "--vgg-weights", str(tmp_path / "v.pth")],
        "missing --content-dir, --out": ["train", "--style", str(photo)],
        "both sides must be at least 16 px; use a max_side of at least":
            [*stylize, "--input", str(photo), "--style", "candy", "--max-side", "17"],
        "strength must be between 0": [*stylize, "--input", str(photo), "--style", "candy", "--strength", "2"],
    }
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken").mkdir()
    for i in range(8):
        (tmp_path / "broken" / f"b{i}.jpg").write_bytes(b"not a jpeg")
    for i in range(5):
        Image.new("RGB", (40, 40)).save(tmp_path / f"p{i}.png")
    for expected, argv in cases.items():
        assert expected in run_error(capsys, argv), argv
    assert not (tmp_path / "o.png").exists()


def test_stylize_refuses_to_replace_its_input(tmp_path, single_ckpt, photo, capsys):
    original = photo.read_bytes()
    (tmp_path / "link.jpg").symlink_to(photo)
    (tmp_path / "sub").mkdir()
    for output in (photo, tmp_path / "link.jpg", tmp_path / "sub" / ".." / photo.name):
        err = run_error(capsys, ["stylize", "--checkpoint", str(single_ckpt), "--input", str(photo),
                                 "--output", str(output)])
        assert "is the --input photo, which it would replace; choose another output path" in err
    assert photo.read_bytes() == original


def test_stylize_checks_the_photo_before_loading_the_model(tmp_path, capsys):
    """A missing checkpoint fails only at the model load: these errors come before it."""
    Image.new("RGB", (16500, 20)).save(tmp_path / "wide.png")
    stylize = ["stylize", "--checkpoint", str(tmp_path / "missing.ckpt")]
    err = run_error(capsys, [*stylize, "--input", str(tmp_path / "nope.jpg"), "--output", str(tmp_path / "o.png")])
    assert "image not found" in err
    err = run_error(capsys, [*stylize, "--input", str(tmp_path / "wide.png"), "--output", str(tmp_path / "o.webp")])
    assert "the image would be 16500x20, but .webp files hold at most 16383 px a side" in err
    err = run_error(capsys, [*stylize, "--input", str(tmp_path / "wide.png"), "--output", str(tmp_path / "o.webp"),
                             "--max-side", "16000"])  # shrunk to 16000x19, which WebP holds: on to the model
    assert "checkpoint not found" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.png"]


def test_console_script_exit_code_and_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("styletrain")  # the console script of this environment
    if not exe.is_file():
        pytest.skip(f"console script not installed next to {sys.executable}")
    proc = subprocess.run([exe, "stylize", "--checkpoint", str(tmp_path / "x.ckpt"), "--input", "a.jpg",
                           "--output", str(tmp_path / "o.png")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "image not found: a.jpg" in proc.stderr
    help_run = subprocess.run([sys.executable, "-m", "styletrain", "--help"], capture_output=True, timeout=120)
    assert help_run.returncode == 0


class _Payload:
    """Unpickling this creates a file: what a planted checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def tiny_train_argv(tmp_path: Path, out: Path) -> list[str]:
    write_images(tmp_path / "photos", 5)
    style = write_images(tmp_path / "styles", 1, seed=5)[0]
    return ["train", "--style", str(style), "--content-dir", str(tmp_path / "photos"), "--out", str(out),
            "--image-size", "32", "--style-size", "32", "--batch-size", "2", "--max-steps", "1", "--width", "4",
            "--num-residuals", "1", "--vgg-weights", "random", "--num-workers", "0", "--no-progress"]


@pytest.mark.parametrize("force_unsafe", [False, True])
def test_resume_refuses_a_planted_pickle_without_running_it(tmp_path, capsys, monkeypatch, force_unsafe):
    import torch

    if force_unsafe:  # torch then loads with weights_only=False unless told otherwise
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    out, marker = tmp_path / "run", tmp_path / "pwned"
    out.mkdir()
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, out / "last.ckpt")
    err = run_error(capsys, tiny_train_argv(tmp_path, out))
    assert not marker.exists()
    assert "refuses to load" in err and "weights_only" not in err


def test_out_that_is_a_file_is_a_user_error(tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    assert "is a file; give a folder" in run_error(capsys, tiny_train_argv(tmp_path, out))


def test_each_call_of_main_logs_once(tmp_path, capsys):
    """A program (or test) that calls main() twice must not get every log line twice the second time."""
    import logging

    before = list(logging.getLogger("styletrain").handlers)
    for _ in range(2):
        main(["export", "--checkpoint", str(tmp_path / "missing.ckpt"), "--output", str(tmp_path / "m.onnx")])
    assert logging.getLogger("styletrain").handlers == before


def test_stylize_refuses_an_image_that_would_not_fit_in_memory(tmp_path, single_ckpt, photo, capsys, monkeypatch):
    """A torch run has no staged mode: a large photo through a .ckpt would be killed part-way."""
    import styletrain.runtime.base as base

    monkeypatch.setattr(base, "available_memory", lambda: 1000)
    err = run_error(capsys, ["stylize", "--checkpoint", str(single_ckpt), "--input", str(photo),
                             "--output", str(tmp_path / "o.png")])
    assert "MiB to stylize with this torch model, more than the 0 MiB free; use --max-side" in err
    assert "the exported .onnx model (it runs large images in stages)" in err and not (tmp_path / "o.png").exists()
