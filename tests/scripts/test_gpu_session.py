"""The GPU session script, run end to end on the CPU with tiny settings (2 steps, 64 px, 8 photos)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import torch
from support import needs_data, needs_vgg

from styletrain.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--max-steps", "2", "--image-size", "64", "--style-size", "64", "--batch-size", "2", "--accelerator", "cpu",
        "--num-workers", "0", "--val-every", "1", "--checkpoint-every", "1"]


def session(*args: str | Path) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_session.py"), *map(str, args)],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@needs_vgg
@needs_data
def test_pack_then_train_resumes_on_a_fresh_machine(tmp_path):
    pack = tmp_path / "pack"
    session("pack", "--pack", pack, "--limit", "8")
    weights = torch.load(pack / "weights" / "vgg16_imagenet_features.pth", weights_only=True)
    assert {v.dtype for v in weights.values()} == {torch.float16} and "features.21.weight" in weights
    assert "features.24.weight" not in weights  # truncated after relu4_3
    assert len(list((pack / "data" / "train").iterdir())) == 8
    assert (pack / "data" / "styles" / "the_scream.jpg").is_file()

    first = tmp_path / "out1"
    session("train", "the_scream", "--shared", pack, "--runs", tmp_path / "runs1", "--out", first, *TINY)
    meta = read_checkpoint(first / "the_scream.ckpt")["styletrain"]
    assert meta["global_step"] == 2 and meta["style_names"] == ["the_scream"]
    with tarfile.open(first / "runs.tar.gz") as tar:
        names = tar.getnames()
    assert "the_scream/samples/step_000002.png" in names and any(n.endswith("metrics.csv") for n in names)

    # a fresh machine: no runs folder, start from the slim checkpoint that came back
    second = tmp_path / "out2"
    session("train", "the_scream", "--shared", pack, "--runs", tmp_path / "runs2", "--out", second,
            "--init-dir", first, *TINY)
    assert "starting from the weights of" in (tmp_path / "runs2" / "the_scream.log").read_text()
    assert read_checkpoint(second / "the_scream.ckpt")["styletrain"]["global_step"] == 2


def test_aside_takes_out_only_committed_files_a_lease_does_not_need(tmp_path):
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    files = ["checkpoints/a.onnx", "checkpoints/a.int8.onnx", "checkpoints/a.ckpt", "docs/g.png", "docs/r/e.png",
             "docs/r.md"]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "m")
    (tmp_path / "checkpoints" / "a.onnx").write_bytes(b"changed")
    script = str(ROOT / "scripts" / "gpu_session.py")
    result = subprocess.run([sys.executable, script, "aside", "--root", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode != 0 and "commit these first" in result.stderr and "checkpoints/a.onnx" in result.stderr
    assert all((tmp_path / name).exists() for name in files)  # nothing taken while one could not come back

    git("checkout", "--", "checkpoints")
    session("aside", "--root", tmp_path)
    session("aside", "--root", tmp_path)  # again: files already aside are not "changed"
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.*") if ".git" not in p.parts) == [
        "checkpoints/a.ckpt", "docs/r.md"]
    git("checkout", "--", "checkpoints", "docs")  # what the script tells the user to run after the lease
    assert all((tmp_path / name).exists() for name in files)
