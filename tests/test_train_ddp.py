"""Lightning DDP, as users with several GPUs run it, here with 2 CPU processes (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from PIL import Image
from support import write_images

from styletrain.checkpoint import read_checkpoint


def train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "styletrain", "train", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_ddp_on_two_cpu_processes_trains_and_resumes(tmp_path):
    photos = tmp_path / "photos"
    write_images(photos, 10, size=40)
    style = write_images(tmp_path / "style", 1, size=40, seed=3)[0]
    out = tmp_path / "run"
    common = ["--style", str(style), "--content-dir", str(photos), "--out", str(out), "--vgg-weights", "random",
              "--image-size", "32", "--style-size", "32", "--batch-size", "2", "--width", "4", "--num-residuals", "1",
              "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--num-workers", "0",
              "--val-every", "2", "--checkpoint-every", "2", "--no-progress"]
    first = train(*common, "--max-steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = read_checkpoint(out / "last.ckpt")
    assert ckpt["styletrain"]["global_step"] == 2
    weights = {k: v.clone() for k, v in ckpt["state_dict"].items()}

    second = train(*common, "--max-steps", "4")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stderr
    resumed = read_checkpoint(out / "last.ckpt")
    assert resumed["styletrain"]["global_step"] == 4
    assert int(resumed["optimizer_states"][0]["state"][0]["step"]) == 4  # Adam went on; a fresh one would be at 2
    with Image.open(out / "samples" / "step_000004.png") as grid:  # all 4 validation photos, not rank 0's 2
        assert grid.height == 4 * (32 + 2) + 2
    assert any(not torch.equal(weights[k], v) for k, v in resumed["state_dict"].items())
