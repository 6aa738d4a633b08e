"""Which int8 recipe a deployment CPU wants: the ``--target`` table and the host's SIMD features.

int8 pays only where the integer matrix kernels are faster than the float ones, and that depends on the
instructions the CPU has, not on the model:

* ``x86-avx2`` — AVX2 without VNNI: ONNX Runtime's u8s8 kernels multiply with ``vpmaddubsw``, whose int16
  pair sums saturate for full 8-bit weights, so the weights are kept to 7 bits (``reduce_range``,
  ``dynamic-matmul``).
* ``x86-vnni`` — AVX512-VNNI or AVX-VNNI: ``vpdpbusd`` accumulates in int32, nothing saturates, full 8-bit
  weights are as fast and more accurate (``dynamic-matmul-8bit``; measured 1.515x vs fp32 against 1.465x
  for the 7-bit recipe in docs/converter.md).
* ``arm64`` / ``arm64-dotprod`` — ONNX Runtime's ARM64 kernels widen to 16 bits (``umull``/``smull``, no
  dot product) or use ``sdot``/``udot`` (int32 accumulation): neither saturates, so full 8-bit weights.
* ``generic`` — unknown CPU: the 7-bit recipe, correct on every kernel.

TFLite/LiteRT uses ``dynamic-int8`` on every CPU target: XNNPACK's qd8 fully-connected kernels exist for
AVX2, AVX512-VNNI, NEON and NEON dot product alike (docs/tflite.md); ``full-int8`` is for integer-only
accelerators, not CPUs. ``auto`` reads the converting machine's ``/proc/cpuinfo`` (deploy on the same CPU).
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from slidelite.errors import UsageError

from .job import ConversionJob

#: the SIMD features that decide int8 speed, as ``/proc/cpuinfo`` spells them
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
              "asimd", "asimddp", "i8mm", "sve")


@dataclass(frozen=True)
class DeployTarget:
    """One ``--target``: the int8 recipe per format and why."""

    name: str
    onnx_recipe: str
    tflite_recipe: str
    reason: str


TARGETS: Dict[str, DeployTarget] = {t.name: t for t in (
    DeployTarget("x86-avx2", "dynamic-matmul", "dynamic-int8",
                 "AVX2 without VNNI: vpmaddubsw saturates int16 sums of 8-bit weights, so 7-bit weights"),
    DeployTarget("x86-vnni", "dynamic-matmul-8bit", "dynamic-int8",
                 "VNNI (vpdpbusd) accumulates in int32: full 8-bit weights, as fast and more accurate"),
    DeployTarget("arm64", "dynamic-matmul-8bit", "dynamic-int8",
                 "ARM64 NEON widening multiply-accumulate does not saturate: full 8-bit weights"),
    DeployTarget("arm64-dotprod", "dynamic-matmul-8bit", "dynamic-int8",
                 "ARM64 dot product (sdot/udot) accumulates in int32: full 8-bit weights"),
    DeployTarget("generic", "dynamic-matmul", "dynamic-int8",
                 "unknown CPU: 7-bit weights are correct on every int8 kernel"),
)}
TARGET_CHOICES = (*TARGETS, "auto")
TFLITE_REASON = "XNNPACK's qd8 int8 fully-connected kernels exist for every CPU target (AVX2, VNNI, NEON, dot product)"


def cpu_features(cpuinfo: Optional[str] = None) -> List[str]:
    """The :data:`SIMD_FLAGS` this CPU reports (``cpuinfo``: the text of ``/proc/cpuinfo``; read when None)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.exists() else ""
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return [flag for flag in SIMD_FLAGS if flag in flags]


def host_target(cpuinfo: Optional[str] = None, machine: Optional[str] = None) -> str:
    """The :data:`TARGETS` name of this CPU (``cpuinfo``/``machine`` override what is read, for tests)."""
    features = set(cpu_features(cpuinfo))
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64"):
        if features & {"avx512_vnni", "avx_vnni"}:
            return "x86-vnni"
        return "x86-avx2" if "avx2" in features else "generic"
    if machine in ("aarch64", "arm64"):
        return "arm64-dotprod" if "asimddp" in features else "arm64"
    return "generic"


def resolve_target(name: str) -> Tuple[DeployTarget, str]:
    """The :class:`DeployTarget` for ``--target name`` and how it was chosen (``auto``: this host's flags).

    Raises:
        UsageError: unknown name (the known ones are listed).
    """
    if name == "auto":
        detected = host_target()
        return TARGETS[detected], f"auto: this CPU is {detected} ({', '.join(cpu_features()) or 'no SIMD flags read'})"
    if name not in TARGETS:
        raise UsageError(f"unknown --target '{name}'; choose one of: {', '.join(TARGET_CHOICES)}")
    return TARGETS[name], name


def target_recipe(job: ConversionJob) -> Tuple[Optional[str], str]:
    """The int8 recipe ``job.target`` wants for a MatMul-heavy graph of ``job.format`` (None when the job has no
    target, no int8 or names its recipe), and the line the report prints about it ("" without a target).

    The graph still decides between the MatMul and the convolution recipe
    (:func:`slidelite.convert.int8_coverage.choose_recipe` takes this as its MatMul default); an explicit
    ``int8_recipe`` wins over both (the line says so).

    Raises:
        UsageError: an unknown target name.
    """
    if not job.int8 or job.target is None:
        return None, ""
    target, how = resolve_target(job.target)
    if job.format == "onnx":
        recipe, reason = target.onnx_recipe, target.reason
    else:
        recipe, reason = target.tflite_recipe, TFLITE_REASON
    if job.int8_recipe is not None:
        return None, f"--int8-recipe {job.int8_recipe} given; target {how} would choose {recipe}"
    return recipe, f"{recipe} for target {how} (for MatMul-heavy graphs): {reason}"
