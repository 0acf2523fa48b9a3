"""``onnxdeploy env`` and the environment block: CPU flags, cores, versions, int8 outlook."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner

from onnxdeploy.cli import cli
from onnxdeploy.environment import cpu_flags, environment, int8_outlook, parse_cpuinfo

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
    assert cpu_flags(flags) == {"avx2": True, "avx512": True, "vnni": True}
    assert cpu_flags(frozenset({"avx2", "avx_vnni"})) == {"avx2": True, "avx512": False, "vnni": True}
    assert cpu_flags(frozenset({"sse2"})) == {"avx2": False, "avx512": False, "vnni": False}


def test_int8_outlook_depends_on_flags_and_machine():
    assert "VNNI present" in int8_outlook({"avx2": True, "vnni": True}, "x86_64")
    assert "no VNNI" in int8_outlook({"avx2": True, "vnni": False}, "x86_64")
    assert "no AVX2" in int8_outlook({}, "x86_64")
    assert "do not apply" in int8_outlook({}, "aarch64")


def test_env_json_keys_and_types():
    result = CliRunner().invoke(cli, ["env", "--json"])
    assert result.exit_code == 0, result.output
    env = json.loads(result.stdout)
    assert set(env["flags"]) == {"avx2", "avx512", "vnni"}
    assert all(isinstance(v, bool) for v in env["flags"].values())
    assert env["cores"] == len(os.sched_getaffinity(0))
    assert env["versions"]["onnxruntime"] and env["versions"]["numpy"]
    assert env == {**environment(), "threads": env["threads"]}


def test_env_text_fits_80_columns():
    result = CliRunner().invoke(cli, ["env"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    assert "int8 flags" in result.output and "usable cores" in result.output
    assert "[/" not in result.output
    assert "env" in CliRunner().invoke(cli, ["--help"]).output
