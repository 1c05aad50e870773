"""``styletrain.runtime.variants``: CPU facts, the automatic choice and its fp32 fallback; torch precision."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from serving.models import ModelRegistry
from styletrain.errors import UserError
from styletrain.export import set_metadata
from styletrain.runtime import load_stylizer
from styletrain.runtime.onnx_backend import load_model, read_metadata
from styletrain.runtime.torch_backend import TorchStylizer, default_precision
from styletrain.runtime.variants import (CpuFacts, choose_variant, int8_is_faster, is_variant_file, parse_cpuinfo,
                                         variant_files, variant_path)

EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi1 bmi2 sha_ni vaes vpclmulqdq

processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx avx2
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
OLD_XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) CPU E5-2680 0 @ 2.70GHz
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx
"""


def _facts(text: str, machine: str = "x86_64") -> CpuFacts:
    facts = parse_cpuinfo(text)
    return CpuFacts(facts.model, machine, facts.flags)


def test_cpu_facts_from_cpuinfo() -> None:
    epyc = _facts(EPYC_AVX2)
    assert epyc.model == "AMD EPYC" and epyc.avx2 and not epyc.vnni and not epyc.bf16
    assert "sha_ni" in epyc.flags  # the first processor's flags
    assert "has: avx2 fma; lacks: avx512f" in epyc.summary()
    spr = _facts(SAPPHIRE_RAPIDS)
    assert spr.avx2 and spr.vnni and spr.bf16
    old = _facts(OLD_XEON)
    assert not (old.avx2 or old.vnni or old.bf16)
    assert parse_cpuinfo("").flags == frozenset()


def test_int8_only_where_measured_faster() -> None:
    assert int8_is_faster(_facts(EPYC_AVX2)) and int8_is_faster(_facts(SAPPHIRE_RAPIDS))
    assert not int8_is_faster(_facts(OLD_XEON))
    assert not int8_is_faster(_facts("Features\t: fp asimd asimddp\n", machine="aarch64"))


@pytest.fixture
def pair(onnx_models: dict[str, Path], tmp_path: Path) -> Path:
    """``mosaic.onnx`` with a ``mosaic.int8.onnx`` beside it: the fp32 graph labelled as its int8
    variant (only the names and the metadata matter here; ``test_quantize`` makes real ones)."""
    model = Path(shutil.copy(onnx_models["single"], tmp_path / "mosaic.onnx"))
    fake = load_model(model)
    variant = {"name": "int8", "source": model.name, "source_sha256": hashlib.sha256(model.read_bytes()).hexdigest()}
    set_metadata(fake, {**read_metadata(fake).to_dict(), "variant": variant})
    variant_path(model, "int8").write_bytes(fake.SerializeToString())
    return model


def test_auto_picks_int8_on_avx2_and_falls_back_to_fp32(pair: Path) -> None:
    int8 = pair.with_name("mosaic.int8.onnx")
    assert choose_variant(pair, facts=_facts(EPYC_AVX2)).path == int8
    assert choose_variant(pair, facts=_facts(SAPPHIRE_RAPIDS)).reason.endswith("AVX2 and VNNI: int8 is faster")
    lacking = choose_variant(pair, facts=_facts(OLD_XEON))  # told the CPU lacks AVX2
    assert (lacking.path, lacking.variant) == (pair, "fp32")
    assert "not known to be faster" in lacking.reason
    gpu = choose_variant(pair, providers=["CUDAExecutionProvider", "CPUExecutionProvider"], facts=_facts(EPYC_AVX2))
    assert gpu.variant == "fp32" and "CPU provider only" in gpu.reason
    assert choose_variant(pair, "fp32", facts=_facts(EPYC_AVX2)).path == pair
    int8.unlink()
    assert choose_variant(pair, facts=_facts(SAPPHIRE_RAPIDS)).reason == "no mosaic.int8.onnx"


def test_a_stale_int8_file_is_not_used(pair: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = load_model(pair)
    model.doc_string = "re-exported"
    pair.write_bytes(model.SerializeToString())
    chosen = choose_variant(pair, facts=_facts(EPYC_AVX2))
    assert (chosen.variant, chosen.reason) == ("fp32", "mosaic.int8.onnx was made from another mosaic.onnx")
    assert "Re-run `styletrain quantize`" in caplog.text


def test_measure_keeps_the_faster_file(pair: Path) -> None:
    times = {"mosaic.onnx": 0.2, "mosaic.int8.onnx": 0.1}
    assert choose_variant(pair, "measure", timer=lambda p: times[p.name]).variant == "int8"
    times["mosaic.onnx"] = 0.05
    chosen = choose_variant(pair, "measure", timer=lambda p: times[p.name])
    assert chosen.variant == "fp32" and "fp32 50 ms, int8 100 ms" in chosen.reason


def test_variant_errors_say_what_to_do(pair: Path) -> None:
    with pytest.raises(UserError, match=r"variant must be one of \['auto', 'fp32', 'int8', 'measure'\]; got 'fp8'"):
        choose_variant(pair, "fp8")
    with pytest.raises(UserError, match="int8 variant runs on the CPU provider only"):
        choose_variant(pair, "int8", providers=["CUDAExecutionProvider"])
    with pytest.raises(UserError, match="give the fp32 model NAME.onnx"):
        choose_variant(pair.with_name("mosaic.int8.onnx"))
    pair.with_name("mosaic.int8.onnx").unlink()
    with pytest.raises(UserError,
                       match="no int8 variant of mosaic.onnx: make mosaic.int8.onnx with `styletrain quantize"):
        choose_variant(pair, "int8")
    with pytest.raises(UserError, match="runs on torch, whose variants are"):
        load_stylizer(pair.with_suffix(".ckpt"), variant="int8")


def test_variant_files_are_not_models_of_their_own(pair: Path) -> None:
    assert is_variant_file(pair.with_name("mosaic.int8.onnx")) and not is_variant_file(pair)
    assert list(variant_files(pair.parent)) == [pair]
    registry = ModelRegistry.from_folder(pair.parent, threads=1, variant="fp32")
    assert list(registry.models) == ["mosaic"] and registry.models["mosaic"].path == pair
    registry = ModelRegistry.from_folder(pair.parent, threads=1, variant="int8")
    assert registry.models["mosaic"].path == pair.with_name("mosaic.int8.onnx")
    # a variant file given directly runs as it is
    assert load_stylizer(pair.with_name("mosaic.int8.onnx"), device="cpu").path.name == "mosaic.int8.onnx"
    with pytest.raises(UserError, match="is the int8 variant; variant 'fp32' was asked for"):
        load_stylizer(pair.with_name("mosaic.int8.onnx"), device="cpu", variant="fp32")


def test_torch_precision_is_float32_on_every_cpu(onnx_models: dict[str, Path]) -> None:
    """bf16 fails the 2/255 parity check on CPUs with native bf16 too: a default that would refuse to serve."""
    assert default_precision(torch.device("cpu")) == "float32"
    assert default_precision(torch.device("cuda")) == "float16"
    assert TorchStylizer.from_checkpoint(onnx_models["multi_ckpt"]).precision == "float32"
    with pytest.raises(UserError, match=r"precision must be one of"):
        TorchStylizer.from_checkpoint(onnx_models["multi_ckpt"], precision="int8")


def test_bf16_torch_run_is_close_to_fp32(onnx_models: dict[str, Path]) -> None:
    fp32 = TorchStylizer.from_checkpoint(onnx_models["multi_ckpt"], precision="float32")
    bf16 = TorchStylizer.from_checkpoint(onnx_models["multi_ckpt"], precision="bfloat16")
    assert (fp32.precision, bf16.precision) == ("float32", "bfloat16")
    x = np.random.default_rng(0).random((2, 3, 24, 40), dtype=np.float32)
    weights = np.array([0.2, 0.5, 0.3], np.float32)
    expected, got = fp32.run(x, weights), bf16.run(x, weights)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=0.05)  # bf16 keeps 8 bits of mantissa
    assert np.abs(got - expected).mean() < 0.01
