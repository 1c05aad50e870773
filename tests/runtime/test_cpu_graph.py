"""``styletrain.runtime.cpu_graph``: the CPU rewrites are exact and only touch their patterns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from styletrain.runtime.cpu_graph import _phase_weights, rewrite_for_cpu
from styletrain.runtime.onnx_backend import CPU, OnnxStylizer, load_model

ATOL = 1e-5  # on [0, 1] outputs; the rewrites only re-associate sums (measured ~1e-6)
CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=[CPU])


def _feeds(model: onnx.ModelProto, height: int, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {"image": rng.random((2, 3, height, width), dtype=np.float32)}
    for value in model.graph.input:
        if value.name == "style_weights":
            n = value.type.tensor_type.shape.dim[1].dim_value
            feeds["style_weights"] = rng.dirichlet(np.ones(n), size=2).astype(np.float32)
    return feeds


@pytest.mark.parametrize("name", ["single", "multi"])
def test_rewritten_graph_gives_the_same_output(onnx_models: dict[str, Path], name: str) -> None:
    model = onnx.load(onnx_models[name])
    rewritten, report = rewrite_for_cpu(model)
    assert report.counts["phase_upsample"] == 2 and report.counts["split_taps"] >= 1
    ops = {n.op_type for n in rewritten.graph.node}
    assert "Resize" not in ops and {"DepthToSpace", "Sum"} <= ops
    before, after = _session(model), _session(rewritten)
    for height, width in ((16, 16), (37, 53), (64, 48)):  # odd sides, the minimum side
        feeds = _feeds(model, height, width)
        np.testing.assert_allclose(after.run(None, feeds)[0], before.run(None, feeds)[0], rtol=0, atol=ATOL)


def test_rewrite_is_idempotent_and_leaves_the_input_model_alone(onnx_models: dict[str, Path]) -> None:
    model = onnx.load(onnx_models["single"])
    serialized = model.SerializeToString()
    once, _ = rewrite_for_cpu(model)
    assert model.SerializeToString() == serialized
    twice, report = rewrite_for_cpu(once)
    assert not report and str(report) == "nothing rewritten"
    assert len(twice.graph.node) == len(once.graph.node)


def test_other_patterns_are_left_alone(onnx_models: dict[str, Path]) -> None:
    model = onnx.load(onnx_models["single"])
    for node in model.graph.node:
        if node.op_type == "Resize":
            kept = [a for a in node.attribute if a.name != "nearest_mode"]
            del node.attribute[:]
            node.attribute.extend([*kept, onnx.helper.make_attribute("nearest_mode", "round_prefer_ceil")])
    rewritten, report = rewrite_for_cpu(model)
    assert report.counts["phase_upsample"] == 0
    assert sum(n.op_type == "Resize" for n in rewritten.graph.node) == 2


def test_phase_weights_match_upsample_then_conv() -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    up = np.pad(x.repeat(2, axis=1).repeat(2, axis=2), ((0, 0), (1, 1), (1, 1)), mode="reflect")
    expected = np.array([[[np.sum(weight[o] * up[:, i:i + 3, j:j + 3]) for j in range(10)] for i in range(8)]
                         for o in range(2)])
    phases = _phase_weights(weight).reshape(4, 2, 3, 2, 2)  # (phase, out, in, 2, 2)
    edge = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    for p, (py, px) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        for i in range(4):
            for j in range(5):
                window = edge[:, i + py:i + py + 2, j + px:j + px + 2]
                got = [np.sum(phases[p, o] * window) for o in range(2)]
                np.testing.assert_allclose(got, expected[:, 2 * i + py, 2 * j + px], rtol=1e-5, atol=1e-5)


def test_the_backend_runs_the_rewrite_on_cpu_only_when_asked(onnx_models: dict[str, Path]) -> None:
    feeds = _feeds(onnx.load(onnx_models["multi"]), 24, 40)
    fast = OnnxStylizer(onnx_models["multi"], providers=[CPU])
    plain = OnnxStylizer(onnx_models["multi"], providers=[CPU], cpu_rewrite=False)
    np.testing.assert_allclose(fast.run(feeds["image"], feeds["style_weights"]),
                               plain.run(feeds["image"], feeds["style_weights"]), rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", ["mosaic", "multistyle"])
def test_shipped_models_match_the_patterns(name: str) -> None:
    path = CHECKPOINTS / f"{name}.onnx"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    _, report = rewrite_for_cpu(load_model(path))  # as the backend loads it (float16 weights unpacked)
    assert dict(report.counts) == {"phase_upsample": 2, "split_taps": 1}
