"""The machine a measurement was taken on: CPU, the flags int8 speed depends on, cores, versions.

Every report carries this block (``environment``), and ``onnxdeploy env`` prints it: an int8
speed-up measured on a CPU with VNNI does not carry over to one without it.

This module is the one place that knows the CPU. Its flags are read the way ONNX Runtime's and
numpy's kernels read them, from the CPUID instruction (numpy's dispatch table, which also checks
that the OS enabled the registers, plus our own CPUID call for what numpy does not name: AVX-VNNI
and AMX). ``/proc/cpuinfo`` is only the fallback: under an emulator (``qemu-x86_64 -cpu
Haswell``) it still shows the host's flags while every kernel sees the emulated CPU, and code that
read it chose 8-bit weights for a CPU whose kernels saturate them.

Tests that branch on the CPU override :func:`cpu_features` (``monkeypatch.setattr``); everything
else reads it through :func:`cpu_flags`.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import os
import platform
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

#: packages whose versions decide what a figure means
VERSIONED = ("onnxdeploy", "onnxruntime", "onnx", "numpy", "torch", "onnxoptimizer",
             "onnxscript", "transformers", "scikit-learn", "skl2onnx", "flask", "granian",
             "openvino", "nncf", "grpcio")

#: the keys of ``environment()["flags"]``, in the order ``onnxdeploy env`` shows them
FLAG_NAMES = ("avx2", "avx512", "vnni", "bf16", "amx")

_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


@dataclass(frozen=True)
class CpuFeatures:
    """What this CPU offers the int8 and bf16 kernels, and where the answer came from."""

    vendor: str
    model: str
    avx2: bool = False
    avx512: bool = False       # AVX-512 Foundation
    avx512_vnni: bool = False
    avx_vnni: bool = False     # the VEX-encoded VNNI of CPUs without AVX-512
    avx512_bf16: bool = False
    amx_int8: bool = False
    amx_bf16: bool = False
    source: str = "cpuid"      # "cpuid", "numpy" or "cpuinfo"

    @property
    def vnni(self) -> bool:
        return self.avx512_vnni or self.avx_vnni

    def flags(self) -> dict[str, bool]:
        """The report's ``flags``: booleans keyed by :data:`FLAG_NAMES`."""
        return {"avx2": self.avx2, "avx512": self.avx512, "vnni": self.vnni,
                "bf16": self.avx512_bf16 or self.amx_bf16, "amx": self.amx_int8 or self.amx_bf16}


# ----------------------------------------------------------------------------- CPUID


# void cpuid(uint32 leaf, uint32 subleaf, uint32 out[4]) for x86-64 System V:
#   push rbx; mov r8,rdx; mov eax,edi; mov ecx,esi; cpuid;
#   mov [r8],eax; mov [r8+4],ebx; mov [r8+8],ecx; mov [r8+12],edx; pop rbx; ret
_CPUID_CODE = bytes.fromhex("53 4989d0 89f8 89f1 0fa2 418900 41895804 41894808 4189500c 5b c3")


class _Cpuid:
    """The CPUID instruction, called through a few bytes of machine code in an executable page."""

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self._page.write(_CPUID_CODE)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._page))
        self._fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32,
                                    ctypes.POINTER(ctypes.c_uint32))(address)

    def __call__(self, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        out = (ctypes.c_uint32 * 4)()
        self._fn(leaf, subleaf, out)
        return out[0], out[1], out[2], out[3]


def _bit(value: int, n: int) -> bool:
    return bool((value >> n) & 1)


def _read_cpuid() -> CpuFeatures | None:
    """The features from CPUID itself, or None where it cannot be called (not x86-64, no exec page)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        cpuid = _Cpuid()
    except (OSError, ValueError, AttributeError):  # a kernel that refuses executable mappings
        return None
    top, b, c, d = cpuid(0)
    vendor = (b.to_bytes(4, "little") + d.to_bytes(4, "little") + c.to_bytes(4, "little")).decode(
        "ascii", "replace")
    model = ""
    if cpuid(0x80000000)[0] >= 0x80000004:
        raw = b"".join(r.to_bytes(4, "little") for leaf in (0x80000002, 0x80000003, 0x80000004)
                       for r in cpuid(leaf))
        model = raw.split(b"\0", 1)[0].decode("ascii", "replace").strip()
    if top < 7:
        return CpuFeatures(vendor=vendor, model=model)
    _, b7, c7, d7 = cpuid(7, 0)
    max_sub = cpuid(7, 0)[0]
    a71 = cpuid(7, 1)[0] if max_sub >= 1 else 0
    return CpuFeatures(
        vendor=vendor, model=model,
        avx2=_bit(b7, 5), avx512=_bit(b7, 16), avx512_vnni=_bit(c7, 11),
        avx_vnni=_bit(a71, 4), avx512_bf16=_bit(a71, 5),
        amx_bf16=_bit(d7, 22), amx_int8=_bit(d7, 25),
    )


def _numpy_view() -> dict[str, bool] | None:
    """numpy's dispatch table: CPUID, masked by what the OS enabled (XCR0)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return None
    return dict(__cpu_features__)


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


def features_from_cpuinfo(text: str) -> CpuFeatures:
    """The features as /proc/cpuinfo words them (the fallback where CPUID cannot be read)."""
    model, flags = parse_cpuinfo(text)
    vendor = next((line.partition(":")[2].strip() for line in text.splitlines()
                   if line.lower().startswith("vendor_id")), "")
    return CpuFeatures(
        vendor=vendor, model=model, avx2="avx2" in flags, avx512="avx512f" in flags,
        avx512_vnni=bool({"avx512_vnni", "avx512vnni"} & flags), avx_vnni="avx_vnni" in flags,
        avx512_bf16="avx512_bf16" in flags, amx_int8="amx_int8" in flags,
        amx_bf16="amx_bf16" in flags, source="cpuinfo")


def _cpuinfo_text() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


@lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This CPU's features, as the kernels see them (CPUID), cached for the process."""
    raw = _read_cpuid()
    np_view = _numpy_view()
    if raw is None and np_view is not None and platform.machine().lower() in _X86:
        fallback = features_from_cpuinfo(_cpuinfo_text())
        raw = CpuFeatures(
            vendor=fallback.vendor, model=fallback.model, avx2=np_view.get("AVX2", False),
            avx512=np_view.get("AVX512F", False), avx512_vnni=np_view.get("AVX512VNNI", False),
            avx512_bf16=np_view.get("AVX512BF16", False), source="numpy")
    elif raw is not None and np_view is not None:
        # CPUID says what the chip has; numpy also checks that the OS saves the registers
        raw = CpuFeatures(
            vendor=raw.vendor, model=raw.model,
            avx2=raw.avx2 and np_view.get("AVX2", raw.avx2),
            avx512=raw.avx512 and np_view.get("AVX512F", raw.avx512),
            avx512_vnni=raw.avx512_vnni and np_view.get("AVX512VNNI", raw.avx512_vnni),
            avx_vnni=raw.avx_vnni and np_view.get("AVX2", raw.avx_vnni),
            avx512_bf16=raw.avx512_bf16 and np_view.get("AVX512BF16", raw.avx512_bf16),
            amx_int8=raw.amx_int8, amx_bf16=raw.amx_bf16)
    if raw is None:
        raw = features_from_cpuinfo(_cpuinfo_text())
    if not raw.model:
        text_model = parse_cpuinfo(_cpuinfo_text())[0]
        raw = CpuFeatures(**{**asdict(raw), "model": text_model or platform.processor()
                             or platform.machine()})
    return raw


def cpu_flags(features: CpuFeatures | None = None) -> dict[str, bool]:
    """The instruction-set flags int8 and bf16 kernels depend on (``environment()["flags"]``)."""
    return (features if features is not None else cpu_features()).flags()


# ----------------------------------------------------------------------------- cores


def affinity_cores() -> int:
    """Cores this process may be scheduled on (its CPU affinity), not the host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def parse_cgroup_limit(cpu_max: str | None = None, quota_us: str | None = None,
                       period_us: str | None = None) -> float | None:
    """CPUs a cgroup may use, from v2 ``cpu.max`` ("200000 100000") or v1 quota and period files.

    None when there is no limit ("max", a quota of -1) or nothing was given.
    """
    if cpu_max is not None:
        parts = cpu_max.split()
        if not parts or parts[0] == "max":
            return None
        quota, period = int(parts[0]), int(parts[1]) if len(parts) > 1 else 100_000
    elif quota_us is not None:
        quota, period = int(quota_us.strip()), int((period_us or "100000").strip())
        if quota < 0:
            return None
    else:
        return None
    return quota / period if period > 0 and quota > 0 else None


def _cgroup_dirs(root: Path) -> list[tuple[str, Path]]:
    """(version, directory) pairs that may hold this process's CPU limit, innermost first."""
    out: list[tuple[str, Path]] = []
    try:
        lines = (Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines())
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        rel = rel.lstrip("/")
        if controllers == "":
            base = root / "unified" if (root / "unified").is_dir() else root
            chain = [base / rel] + [base / p for p in Path(rel).parents if str(p) != "."] + [base]
            out.extend(("v2", d) for d in chain)
        elif "cpu" in controllers.split(","):
            for name in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
                if (root / name).is_dir():
                    base = root / name
                    chain = [base / rel] + [base / p for p in Path(rel).parents if str(p) != "."]
                    out.extend(("v1", d) for d in chain + [base])
                    break
    if not out:
        out = [("v2", root), ("v1", root / "cpu")]
    return out


def cgroup_cpu_limit(root: str | os.PathLike = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in CPUs (1.5 for "150000 100000"), or None if unlimited.

    A container's ``--cpus`` and a Kubernetes CPU limit land here; the affinity mask does not
    show them. The smallest limit on the way up the hierarchy is the one in force.
    """
    limits: list[float] = []
    for version, d in _cgroup_dirs(Path(root)):
        try:
            if version == "v2":
                limit = parse_cgroup_limit(cpu_max=(d / "cpu.max").read_text(encoding="utf-8"))
            else:
                limit = parse_cgroup_limit(
                    quota_us=(d / "cpu.cfs_quota_us").read_text(encoding="utf-8"),
                    period_us=(d / "cpu.cfs_period_us").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if limit is not None:
            limits.append(limit)
    return min(limits) if limits else None


def usable_cores() -> int:
    """Cores this process can really use: its affinity, capped by the cgroup CPU limit (rounded up)."""
    cores = affinity_cores()
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit - 1e-9)))
    return cores


# ----------------------------------------------------------------------------- the report block


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


def int8_outlook(flags: dict[str, bool], machine: str | None = None) -> str:
    """One sentence on what int8 can buy on this CPU."""
    machine = (machine if machine is not None else platform.machine()).lower()
    if machine and machine not in _X86:
        return (f"{machine} CPU: the x86 flags (AVX2, VNNI) do not apply; ONNX Runtime's int8 "
                "kernels use NEON here: measure before assuming a speed-up")
    if flags.get("amx"):
        return ("AMX present: int8 and bf16 matrix tiles; int8 speed-ups are largest here, and "
                "bf16 float variants are worth measuring")
    if flags.get("vnni"):
        return ("VNNI present: int8 MatMul/Conv kernels use its dot-product instructions; this is "
                "the CPU class where int8 speed-ups are largest")
    if flags.get("avx2") or flags.get("avx512"):
        return ("no VNNI: int8 mostly buys size (about 4x); speed gains are modest and come from "
                "memory-bound MatMul/Gemm layers; u8 x s8 products can saturate (reduce_range helps)")
    return "no AVX2: int8 kernels fall back to slow paths; expect size gains only"


def environment(threads: int | None = None) -> dict[str, Any]:
    """The ``environment`` block of every report; ``threads`` is ORT intra-op threads per session."""
    feats = cpu_features()
    flags = feats.flags()
    limit = cgroup_cpu_limit()
    return {
        "cpu": feats.model,
        "vendor": feats.vendor,
        "machine": platform.machine(),
        "flags": flags,
        "flags_source": feats.source,
        "cores": affinity_cores(),
        "cpu_limit": limit,
        "usable_cores": usable_cores(),
        "python": platform.python_version(),
        "versions": {p: v for p in VERSIONED if (v := _version(p)) is not None},
        "threads": threads if threads is not None else usable_cores(),
        "int8": int8_outlook(flags, platform.machine()),
    }
