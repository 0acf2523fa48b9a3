"""The front door: every command has --help, and serving never needs torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from onnxdeploy.cli import COMMANDS, cli

# Make any import of torch fail, as in an image built with only the `serve` extra.
_NO_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
            return None
    sys.meta_path.insert(0, _Block())
""")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and "--help" in result.output


def test_help_and_serve_app_work_without_torch(mlp_path):
    code = _NO_TORCH + textwrap.dedent(f"""
        from click.testing import CliRunner
        from onnxdeploy.cli import cli
        for args in (["--help"], ["serve", "--help"], ["compare", "--help"]):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 0, (args, result.output)
        from onnxdeploy.serve.app import create_app
        app = create_app({{"MODEL_PATH": {str(mlp_path)!r}}})
        client = app.test_client()
        reply = client.post("/predict", json={{"inputs": [[0.0] * 64]}})
        assert reply.status_code == 200, reply.get_json()
        assert len(reply.get_json()["predictions"]) == 1
        assert "torch" not in sys.modules
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_export_without_torch_says_how_to_install(tmp_path):
    code = _NO_TORCH + textwrap.dedent(f"""
        from onnxdeploy.cli import main
        main(["export", "digits-cnn", "-o", {str(tmp_path / "m.onnx")!r}])
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "pip install 'onnxdeploy[torch]'" in proc.stderr
    assert not (tmp_path / "m.onnx").exists()
