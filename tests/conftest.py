"""Shared fixtures: paths to ../shared data (skipping visibly when absent) and tiny checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import DATA, SHARED, VGG_WEIGHTS, make_checkpoint, needs_data, needs_vgg  # noqa: F401

@pytest.fixture
def vgg_weights() -> Path:
    if not VGG_WEIGHTS.is_file():
        pytest.skip(f"needs the VGG16 weights at {VGG_WEIGHTS}")
    return VGG_WEIGHTS


@pytest.fixture
def single_ckpt(tmp_path: Path) -> Path:
    return make_checkpoint(tmp_path / "single.ckpt", ["mosaic"])


@pytest.fixture
def multi_ckpt(tmp_path: Path) -> Path:
    return make_checkpoint(tmp_path / "multi.ckpt", ["candy", "mosaic", "udnie"])


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny exported models, made once per session (an export takes seconds): {"multi", "single"}.

    ``multi`` holds candy, mosaic, udnie (exported with ``export_onnx``); ``single`` holds mosaic
    (exported through the ``styletrain export`` command, so the CLI path is covered too).
    """
    from styletrain.cli import main
    from styletrain.export import export_onnx

    folder = tmp_path_factory.mktemp("onnx_models")
    ckpts = tmp_path_factory.mktemp("onnx_ckpts")
    multi = export_onnx(make_checkpoint(ckpts / "multi.ckpt", ["candy", "mosaic", "udnie"]),
                        folder / "multi.onnx")
    single_ckpt = make_checkpoint(ckpts / "mosaic.ckpt", ["mosaic"], seed=1)
    if main(["export", "--checkpoint", str(single_ckpt), "--output", str(folder / "mosaic.onnx")]) != 0:
        raise RuntimeError("styletrain export failed")
    return {"multi": multi, "single": folder / "mosaic.onnx", "dir": folder,
            "multi_ckpt": ckpts / "multi.ckpt", "single_ckpt": single_ckpt}
