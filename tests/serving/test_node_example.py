"""examples/node/client.js, a client in another language, against a real server: the proto as it is
in proto/ must load and work with @grpc/grpc-js and @grpc/proto-loader."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "node"
NODE = shutil.which("node")

Live = Any  # tests/serving/conftest.py's Live


@pytest.mark.skipif(NODE is None, reason="needs node (Node.js 18+) for examples/node")
@pytest.mark.skipif(not (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir(),
                    reason="needs `npm install` in examples/node (.ci/run does it when npm is available)")
def test_node_client_lists_stylizes_and_streams(start_server: Callable[..., Live]) -> None:
    live = start_server()
    result = subprocess.run([NODE, str(EXAMPLE / "client.js"), live.address], capture_output=True, text=True,
                            timeout=120, cwd=EXAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["model mosaic: mosaic", "model multi: candy, mosaic, udnie"]
    assert lines[2].startswith("Stylize candy: 48x32 IMAGE_FORMAT_PNG from model multi (onnxruntime on cpu")
    assert lines[3].startswith("frame 1: 48x32 IMAGE_FORMAT_JPEG from model multi")
    assert lines[4].startswith("frame 2: 48x32 IMAGE_FORMAT_JPEG from model multi")
    assert lines[5].startswith("frame 3: error NOT_FOUND: unknown style 'no_such_style'")
    assert len(lines) == 6
