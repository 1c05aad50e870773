"""Training defaults a user relies on without setting them (the DDP run: test_train_ddp.py)."""

from __future__ import annotations

import pytest
import torch

from styletrain import train
from styletrain.runtime.variants import parse_cpuinfo

AVX512_BF16 = "flags\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16\n"
AVX2_ONLY = "flags\t: fpu sse2 avx2 fma\n"


@pytest.mark.parametrize(("cpuinfo", "expected"), [(AVX512_BF16, "bf16-mixed"), (AVX2_ONLY, "32-true")])
def test_cpu_training_uses_bf16_only_where_the_cpu_has_it(monkeypatch, cpuinfo: str, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train, "cpu_facts", lambda: parse_cpuinfo(cpuinfo))
    assert train.default_precision("auto") == expected
    assert train.default_precision("cpu") == expected


def test_gpu_training_uses_bf16_where_the_gpu_supports_it(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(train, "cpu_facts", lambda: parse_cpuinfo(AVX2_ONLY))
    for supported, expected in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert train.default_precision("auto") == expected
        assert train.default_precision("gpu") == expected
