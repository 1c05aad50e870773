"""onnxruntime's process-wide settings (``styletrain.runtime.ort_env``): with a shared thread pool, a
model's staged sessions add no threads and give the same pixels. Each case runs in a fresh process,
since the shared pool, once made, is the process's for good."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
    import json, os, sys
    import numpy as np
    from styletrain.runtime import ort_env
    from styletrain.runtime.onnx_backend import OnnxStylizer
    from styletrain.runtime.staged import Staging

    def threads():
        return len(os.listdir("/proc/self/task"))

    path, share = sys.argv[1], sys.argv[2] == "shared"
    if share:
        ort_env.share_thread_pool(2)
    before = threads()
    stylizer = OnnxStylizer(path, threads=2, staging=Staging(min_pixels=64 * 64, tile_bytes=2**18))
    stylizer.warm_up()  # builds the staged sessions
    pixels = np.random.default_rng(0).integers(0, 256, (96, 80, 3), dtype=np.uint8)
    out = stylizer.run_pixels(pixels, np.ones(1, np.float32))
    print(json.dumps({"added": threads() - before, "sessions": 1 + len(stylizer._stage_sessions),
                      "staged": stylizer.runs_staged(96, 80), "out": out.tolist()}))
"""


def run(model: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(model), mode],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc (Linux)")
def test_a_shared_pool_gives_staged_sessions_no_threads_of_their_own(onnx_models: dict[str, Path]) -> None:
    own, shared = run(onnx_models["single"], "own"), run(onnx_models["single"], "shared")
    assert own["staged"] and shared["staged"] and own["sessions"] > 5
    assert own["added"] >= own["sessions"]  # a pool of 2 per session: one thread each besides the caller
    assert shared["added"] <= 1  # the shared pool's one thread besides the caller
    assert own["out"] == shared["out"]


def test_the_shared_pool_is_made_once_per_process() -> None:
    script = """
        from styletrain.runtime import ort_env
        assert not ort_env.shares_thread_pool()
        ort_env.share_thread_pool(1)
        ort_env.share_thread_pool(1)  # the same size again: nothing to do
        assert ort_env.shares_thread_pool()
        try:
            ort_env.share_thread_pool(3)
        except RuntimeError as exc:
            print(exc)
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                         check=True, cwd=REPO, timeout=120)
    assert "already shares a pool of 1 threads" in out.stdout
