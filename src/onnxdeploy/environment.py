"""The machine a measurement was taken on: CPU, the flags int8 speed depends on, cores, versions.

Every report carries this block (``environment``), and ``onnxdeploy env`` prints it: an int8
speed-up measured on a CPU with VNNI does not carry over to one without it.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

#: packages whose versions decide what a figure means
VERSIONED = ("onnxdeploy", "onnxruntime", "onnx", "numpy", "torch", "onnxoptimizer",
             "onnxscript", "transformers", "scikit-learn", "skl2onnx", "flask", "granian")


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, not the host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """``(model name, flags)`` from the text of /proc/cpuinfo (x86 ``flags`` or ARM ``Features``)."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    return model, flags


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """``(model name, flags)`` of this machine; the platform's processor string where /proc is absent."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine(), frozenset()
    model, flags = parse_cpuinfo(text)
    return model or platform.processor() or platform.machine(), flags


def cpu_flags(flags: frozenset[str] | None = None) -> dict[str, bool]:
    """The instruction-set flags int8 kernels depend on: avx2, avx512 (F), vnni (AVX512 or AVX)."""
    if flags is None:
        _, flags = _cpuinfo()
    return {
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "vnni": bool({"avx512_vnni", "avx_vnni", "avx512vnni"} & flags),
    }


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


def int8_outlook(flags: dict[str, bool], machine: str | None = None) -> str:
    """One sentence on what int8 can buy on this CPU."""
    machine = (machine if machine is not None else platform.machine()).lower()
    if machine and machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return (f"{machine} CPU: the x86 flags (AVX2, VNNI) do not apply; ONNX Runtime's int8 "
                "kernels use NEON here: measure before assuming a speed-up")
    if flags.get("vnni"):
        return ("VNNI present: int8 MatMul/Conv kernels use its dot-product instructions; this is "
                "the CPU class where int8 speed-ups are largest")
    if flags.get("avx2") or flags.get("avx512"):
        return ("no VNNI: int8 mostly buys size (about 4x); speed gains are modest and come from "
                "memory-bound MatMul/Gemm layers; u8 x s8 products can saturate (reduce_range helps)")
    return "no AVX2: int8 kernels fall back to slow paths; expect size gains only"


def environment(threads: int | None = None) -> dict[str, Any]:
    """The ``environment`` block of every report; ``threads`` is ORT intra-op threads per session."""
    model, _ = _cpuinfo()
    flags = cpu_flags()
    return {
        "cpu": model,
        "machine": platform.machine(),
        "flags": flags,
        "cores": usable_cores(),
        "python": platform.python_version(),
        "versions": {p: v for p in VERSIONED if (v := _version(p)) is not None},
        "threads": threads if threads is not None else usable_cores(),
        "int8": int8_outlook(flags, platform.machine()),
    }
