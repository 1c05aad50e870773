"""Which file of a model to run on this machine: the fp32 export or its int8 variant.

A model ``NAME.onnx`` (fp32, what ``styletrain export`` writes) may have variants beside it,
``NAME.<variant>.onnx`` (``styletrain quantize`` writes ``NAME.int8.onnx``). ``choose_variant``
picks one:

- ``fp32`` / ``int8``: that file (int8 only on the CPU provider);
- ``auto`` (default): int8 when its file exists and was made from this ``NAME.onnx`` (its
  metadata records the fp32 file's sha256), the session runs on the CPU provider and the CPU is
  one where onnxruntime's int8 convs were measured faster than fp32 (``int8_is_faster``); fp32
  otherwise: on CUDA, on CPUs without AVX2 (and on Arm, not measured), or when asked;
- ``measure``: time both on a small image at load and keep the faster (costs about a second).

CPU facts come from ``/proc/cpuinfo`` (Linux; elsewhere none are known and fp32 is chosen). Torch-free.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from styletrain.errors import UserError

log = logging.getLogger(__name__)

VARIANTS = ("auto", "fp32", "int8", "measure")
FILE_VARIANTS = ("int8",)
"""Variants stored as ``NAME.<variant>.onnx`` beside the fp32 ``NAME.onnx``."""


@dataclass(frozen=True)
class CpuFacts:
    """What matters about a CPU for choosing a variant: its name, architecture and feature flags."""

    model: str
    machine: str
    flags: frozenset[str]

    @property
    def avx2(self) -> bool:
        return "avx2" in self.flags

    @property
    def vnni(self) -> bool:
        """int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
        return bool(self.flags & {"avx512_vnni", "avx_vnni", "amx_int8"})

    @property
    def bf16(self) -> bool:
        """Native bf16 matrix arithmetic: AVX512-BF16 or AMX-BF16."""
        return bool(self.flags & {"avx512_bf16", "amx_bf16"})

    def summary(self) -> str:
        """One line: model, and which of the flags that matter here are present."""
        wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
        have = [f for f in wanted if f in self.flags]
        missing = [f for f in wanted if f not in self.flags]
        return (f"{self.model} ({self.machine}); has: {' '.join(have) or 'none of these'}; "
                f"lacks: {' '.join(missing) or 'nothing'}")


def read_cpu_facts(cpuinfo: str | Path = "/proc/cpuinfo") -> CpuFacts:
    """The CPU's facts from ``/proc/cpuinfo`` (flags of the first processor); empty flags if unreadable."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    return parse_cpuinfo(text)


def parse_cpuinfo(text: str) -> CpuFacts:
    """``CpuFacts`` from the text of a ``/proc/cpuinfo`` (x86 ``flags`` or Arm ``Features`` lines)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor is enough: all cores of a machine share the flags
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    flags = fields.get("flags") or fields.get("features") or ""
    model = fields.get("model name") or fields.get("cpu model") or platform.processor() or "unknown CPU"
    return CpuFacts(model=re.sub(r"\s+", " ", model), machine=platform.machine(), flags=frozenset(flags.split()))


@lru_cache(maxsize=1)
def cpu_facts() -> CpuFacts:
    """This machine's ``CpuFacts`` (read once)."""
    return read_cpu_facts()


def int8_is_faster(facts: CpuFacts) -> bool:
    """Whether onnxruntime's int8 convs beat fp32 here: x86 with AVX2 (measured on an AVX2-only
    AMD EPYC, see ``docs/cpu.md``; VNNI and AMX only widen the gap). Unmeasured CPUs get fp32."""
    return facts.machine.lower() in ("x86_64", "amd64") and facts.avx2


def variant_path(model: str | Path, variant: str) -> Path:
    """``NAME.onnx`` -> ``NAME.<variant>.onnx`` (``fp32``: the file itself)."""
    model = Path(model)
    if variant == "fp32":
        return model
    if variant not in FILE_VARIANTS:
        raise UserError(f"variant files are {list(FILE_VARIANTS)}; got {variant!r}")
    return model.with_name(f"{model.stem}.{variant}{model.suffix}")


def is_variant_file(path: str | Path) -> bool:
    """True for ``NAME.int8.onnx``: a variant of ``NAME.onnx``, not a model of its own."""
    stem = Path(path).stem
    return any(stem.endswith(f".{v}") for v in FILE_VARIANTS)


@dataclass(frozen=True)
class Choice:
    """The file to load, which variant it is, and why it was chosen (for the logs)."""

    path: Path
    variant: str
    reason: str


def choose_variant(model: str | Path, requested: str = "auto", *, providers: Sequence[str] = ("CPUExecutionProvider",),
                   facts: CpuFacts | None = None,
                   timer: Callable[[Path], float] | None = None) -> Choice:
    """The variant of ``model`` (the fp32 ``NAME.onnx``) to run with ``providers``; see the module doc.

    ``facts`` defaults to this machine's; ``timer`` (a file's seconds per run) is used by ``measure``.
    """
    if requested not in VARIANTS:
        raise UserError(f"variant must be one of {list(VARIANTS)}; got {requested!r}")
    model = Path(model)
    if is_variant_file(model):
        raise UserError(f"give the fp32 model NAME.onnx and a variant, not the variant file {model.name}")
    on_cpu = list(providers) == ["CPUExecutionProvider"]
    int8 = variant_path(model, "int8")
    if requested == "fp32":
        return Choice(model, "fp32", "asked for")
    if requested == "int8":
        if not on_cpu:
            raise UserError(f"the int8 variant runs on the CPU provider only; providers are {list(providers)}")
        if not int8.is_file():
            raise UserError(f"no int8 variant of {model.name}: make {int8.name} with "
                            f"`styletrain quantize --model {model} --calibration-dir DIR`")
        return Choice(int8, "int8", "asked for")
    if not int8.is_file():
        return Choice(model, "fp32", f"no {int8.name}")
    if not made_from(int8, model):
        log.warning("%s was not made from this %s (re-exported since?); running fp32. Re-run `styletrain quantize`",
                    int8.name, model.name)
        return Choice(model, "fp32", f"{int8.name} was made from another {model.name}")
    if not on_cpu:
        return Choice(model, "fp32", f"int8 runs on the CPU provider only; providers are {list(providers)}")
    if requested == "measure":
        timer = timer or _time_one_run
        seconds = {name: timer(path) for name, path in (("fp32", model), ("int8", int8))}
        best = min(seconds, key=seconds.__getitem__)
        detail = ", ".join(f"{name} {1000 * s:.0f} ms" for name, s in seconds.items())
        return Choice(int8 if best == "int8" else model, best, f"measured at load: {detail}")
    facts = facts or cpu_facts()
    if int8_is_faster(facts):
        return Choice(int8, "int8", f"CPU with AVX2{' and VNNI' if facts.vnni else ''}: int8 is faster")
    return Choice(model, "fp32", f"int8 not known to be faster on this CPU ({facts.model}, {facts.machine})")


def made_from(variant: Path, model: Path) -> bool:
    """Whether the variant file records ``model``'s current bytes as its source (sha256)."""
    from styletrain.runtime.onnx_backend import load_model, read_metadata

    recorded = read_metadata(load_model(variant)).extra.get("variant", {}).get("source_sha256")
    return recorded == hashlib.sha256(model.read_bytes()).hexdigest()


def _time_one_run(path: Path, side: int = 256, runs: int = 3) -> float:
    """Fastest of ``runs`` runs of a model file at ``side`` px on the CPU, in seconds (after a warm-up)."""
    from styletrain.runtime.onnx_backend import CPU, OnnxStylizer

    stylizer = OnnxStylizer(path, providers=[CPU])
    image = np.full((1, 3, side, side), 0.5, dtype=np.float32)
    weights = np.full(len(stylizer.style_names), 1.0 / len(stylizer.style_names), dtype=np.float32)
    stylizer.run(image, weights)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        stylizer.run(image, weights)
        best = min(best, time.perf_counter() - start)
    return best


def variant_files(folder: str | Path, pattern: str = "*.onnx") -> Iterable[Path]:
    """The fp32 models of a folder (variant files left out), sorted by name."""
    return sorted(p for p in Path(folder).glob(pattern) if not is_variant_file(p))
