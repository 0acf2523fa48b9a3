"""``onnxdeploy env``: the machine's CPU, the flags int8 depends on, cores and versions."""

from __future__ import annotations

import click

from ..environment import environment
from ..report.terminal import console, kv_table
from .common import emit


def render(env: dict) -> None:
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in env["flags"].items())
    rows = [
        ("cpu", f"{env['cpu']} ({env['machine']})"),
        ("int8 flags", flags),
        ("usable cores", str(env["cores"])),
        ("ORT threads", f"{env['threads']} a session by default"),
        ("python", env["python"]),
        *((name, version) for name, version in env["versions"].items()),
        ("int8 here", env["int8"]),
    ]
    console().print(kv_table("environment", rows))


@click.command("env")
@click.option("--json", "as_json", is_flag=True, help="Print the environment as JSON on stdout and nothing else.")
def command(as_json):
    """Show the CPU and the flags int8 depends on, usable cores, package versions."""
    emit(environment(), as_json=as_json, report_path=None, render=render)
