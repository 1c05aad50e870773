"""scripts/describe_checkpoints.py: the tables of checkpoints/README.md from evaluate's JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from styletrain.checkpoint import load_transformer, save_transformer
from support import make_checkpoint

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "describe_checkpoints.py"


def _row(photo: str, style: str, fast: float, gatys: float, int8: float | None = None, diff: float = 0.0) -> dict:
    row = {"photo": photo, "style": style, "fast": {"total": fast}, "gatys": {"total": gatys}, "ratio": fast / gatys}
    if int8 is not None:
        row["variants"] = {f"{style}.int8.onnx": {"total": int8, "mean_abs_diff": diff}}
    return row


def _write(folder: Path, name: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"checkpoint": f"{name}.ckpt", "steps": 100, "size": 128,
                                                     "rows": rows}))


def test_tables_compare_with_the_previous_models_and_the_int8_variants(tmp_path: Path) -> None:
    make_checkpoint(tmp_path / "models" / "mosaic.ckpt", ["mosaic"])
    _write(tmp_path / "eval", "mosaic", [_row("a.jpg", "mosaic", 3.0, 1.0), _row("b.jpg", "mosaic", 5.0, 2.0)])
    _write(tmp_path / "old", "mosaic", [_row("a.jpg", "mosaic", 4.0, 1.0), _row("b.jpg", "mosaic", 6.0, 2.0)])
    _write(tmp_path / "int8", "mosaic", [_row("a.jpg", "mosaic", 3.0, 1.0, int8=3.03, diff=2.5),
                                         _row("b.jpg", "mosaic", 5.0, 2.0, int8=4.95, diff=4.0)])
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "models"), "--evals", str(tmp_path / "eval"),
                          "--previous", str(tmp_path / "old"), "--int8", str(tmp_path / "int8")],
                         check=True, capture_output=True, text=True).stdout
    assert "| `mosaic` | 2 x 1 | 0.9900-1.0100 | 2.5-4.0 |" in out
    assert "| `mosaic` | mosaic | 2 | 100 | 128 | 4 | 1.5 | 2.75, 3.00 |" in out
    assert "| `mosaic` | mosaic | 5 | 4 | 0.80 |" in out


def test_steps_and_time_add_up_a_chain_of_init_from_runs(tmp_path: Path) -> None:
    path = make_checkpoint(tmp_path / "models" / "wave.ckpt", ["wave"])
    net, meta = load_transformer(path)
    meta.global_step, meta.train_seconds = 40, 600.0
    meta.started_from = {"checkpoint": "b.ckpt", "global_step": 200, "train_seconds": 1200.0,
                         "widened_from": net.width // 2,  # train --init-from a narrower net
                         "started_from": {"checkpoint": "a.ckpt", "global_step": 300, "train_seconds": 1800.0}}
    save_transformer(net, meta, path)
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "models")],
                         check=True, capture_output=True, text=True).stdout
    assert "| 300 + 200 + 40 | 10 min (+ 50 min before) |" in out
    assert f"width {net.width // 2} -> {net.width}," in out
