"""The committed stubs in styletrain/v1/ are what proto/generate.sh makes from the .proto file."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUBS = ("styletrain_pb2.py", "styletrain_pb2.pyi", "styletrain_pb2_grpc.py")


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None,
                    reason="needs grpcio-tools (pip install -e '.[dev]') to regenerate the stubs")
def test_regenerated_stubs_are_identical(tmp_path: Path) -> None:
    from importlib.metadata import version

    committed = (ROOT / "styletrain" / "v1" / "styletrain_pb2_grpc.py").read_text()
    if f"GRPC_GENERATED_VERSION = '{version('grpcio-tools')}'" not in committed:
        pytest.skip(f"grpcio-tools {version('grpcio-tools')} differs from the version that made the stubs")
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    subprocess.run(["sh", str(tmp_path / "proto" / "generate.sh")], check=True,
                   env={**os.environ, "PYTHON": sys.executable})
    for name in STUBS:
        fresh = (tmp_path / "styletrain" / "v1" / name).read_text()
        assert fresh == (ROOT / "styletrain" / "v1" / name).read_text(), f"{name} is stale: run proto/generate.sh"


def _buf() -> str | None:
    local = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
    return str(local) if local.is_file() else shutil.which("buf")


@pytest.mark.skipif(_buf() is None, reason="needs buf: `npm install --prefix .tools @bufbuild/buf` "
                    "(.ci/run does this when npm is available)")
def test_buf_lint_passes() -> None:
    """buf.yaml's rules (STANDARD + COMMENTS) hold for proto/ (the vendored proto/google is not linted)."""
    result = subprocess.run([_buf(), "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"buf lint:\n{result.stdout}{result.stderr}"
