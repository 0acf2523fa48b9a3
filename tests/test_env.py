"""``onnxdeploy env`` and the environment block: CPU flags, cores, versions, int8 outlook."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from onnxdeploy import environment as envmod
from onnxdeploy.cli import cli
from onnxdeploy.environment import (
    CpuFeatures,
    cgroup_cpu_limit,
    cpu_features,
    cpu_flags,
    environment,
    features_from_cpuinfo,
    int8_outlook,
    parse_cgroup_limit,
    parse_cpuinfo,
)

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni
"""


def test_parse_cpuinfo_and_flags():
    model, flags = parse_cpuinfo(CPUINFO)
    assert model.startswith("Intel(R) Xeon(R) Platinum 8375C")
    feats = features_from_cpuinfo(CPUINFO)
    assert feats.vendor == "GenuineIntel" and feats.source == "cpuinfo"
    assert cpu_flags(feats) == {"avx2": True, "avx512": True, "vnni": True, "bf16": False, "amx": False}
    avx_vnni = features_from_cpuinfo("flags : avx2 avx_vnni\n")
    assert cpu_flags(avx_vnni) == {"avx2": True, "avx512": False, "vnni": True, "bf16": False, "amx": False}
    assert not any(cpu_flags(features_from_cpuinfo("flags : sse2\n")).values())
    spr = features_from_cpuinfo("flags : avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8\n")
    assert cpu_flags(spr) == {"avx2": True, "avx512": True, "vnni": True, "bf16": True, "amx": True}


def test_flags_come_from_cpuid_as_the_kernels_see_them():
    """On x86-64 the flags are CPUID's (what numpy and ONNX Runtime dispatch on), not /proc/cpuinfo's:
    under ``qemu-x86_64 -cpu Haswell`` cpuinfo still lists the host's AVX-512 while the kernels run
    AVX2 code (``make test-avx2`` runs the quantize tests there)."""
    import platform

    feats = cpu_features()
    if platform.machine().lower() not in ("x86_64", "amd64"):
        assert feats.source in ("numpy", "cpuinfo")
        return
    assert feats.source == "cpuid" and feats.vendor in ("GenuineIntel", "AuthenticAMD", "HygonGenuine")
    assert feats.model
    from numpy._core._multiarray_umath import __cpu_features__ as np_view

    # numpy reads the same instruction: the two views agree on every flag numpy names
    assert feats.avx2 == np_view["AVX2"] and feats.avx512 == np_view["AVX512F"]
    assert feats.avx512_vnni == np_view["AVX512VNNI"] and feats.avx512_bf16 == np_view["AVX512BF16"]


def test_a_test_can_override_the_cpu(monkeypatch):
    haswell = CpuFeatures(vendor="GenuineIntel", model="Haswell", avx2=True)
    monkeypatch.setattr(envmod, "cpu_features", lambda: haswell)
    assert cpu_flags() == {"avx2": True, "avx512": False, "vnni": False, "bf16": False, "amx": False}
    env = environment()
    assert env["cpu"] == "Haswell" and env["flags"]["vnni"] is False and "no VNNI" in env["int8"]


@pytest.mark.parametrize("cpu_max, quota, period, expected", [
    ("max 100000\n", None, None, None),
    ("150000 100000\n", None, None, 1.5),
    ("50000 100000", None, None, 0.5),
    (None, "-1\n", "100000\n", None),
    (None, "200000\n", "100000\n", 2.0),
    (None, None, None, None),
])
def test_cgroup_limit_parsing(cpu_max, quota, period, expected):
    assert parse_cgroup_limit(cpu_max=cpu_max, quota_us=quota, period_us=period) == expected


def test_cgroup_limit_read_from_a_v2_tree_and_caps_cores(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.0
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    # the container's limit, not the host's cores, sizes thread pools and workers
    monkeypatch.setattr(envmod, "cgroup_cpu_limit", lambda root="/sys/fs/cgroup": 1.2)
    monkeypatch.setattr(envmod, "affinity_cores", lambda: 8)
    assert envmod.usable_cores() == 2
    monkeypatch.setattr(envmod, "cgroup_cpu_limit", lambda root="/sys/fs/cgroup": 0.5)
    assert envmod.usable_cores() == 1
    monkeypatch.setattr(envmod, "cgroup_cpu_limit", lambda root="/sys/fs/cgroup": None)
    assert envmod.usable_cores() == 8


def test_int8_outlook_depends_on_flags_and_machine():
    assert "AMX present" in int8_outlook({"avx2": True, "vnni": True, "amx": True}, "x86_64")
    assert "VNNI present" in int8_outlook({"avx2": True, "vnni": True}, "x86_64")
    assert "no VNNI" in int8_outlook({"avx2": True, "vnni": False}, "x86_64")
    assert "no AVX2" in int8_outlook({}, "x86_64")
    assert "do not apply" in int8_outlook({}, "aarch64")


def test_env_json_keys_and_types():
    result = CliRunner().invoke(cli, ["env", "--json"])
    assert result.exit_code == 0, result.output
    env = json.loads(result.stdout)
    assert set(env["flags"]) == {"avx2", "avx512", "vnni", "bf16", "amx"}
    assert all(isinstance(v, bool) for v in env["flags"].values())
    assert env["cores"] == len(os.sched_getaffinity(0))
    assert 1 <= env["usable_cores"] <= env["cores"] and env["vendor"] and env["flags_source"]
    assert env["versions"]["onnxruntime"] and env["versions"]["numpy"]
    assert env == {**environment(), "threads": env["threads"]}


def test_env_text_fits_80_columns():
    result = CliRunner().invoke(cli, ["env"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    assert "int8 flags" in result.output and "usable cores" in result.output
    assert "[/" not in result.output
    assert "env" in CliRunner().invoke(cli, ["--help"]).output
