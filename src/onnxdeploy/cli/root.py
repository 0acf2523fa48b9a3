"""The ``onnxdeploy`` group: its commands, imported on first use, and how errors print.

``onnxdeploy.cli`` imports this module only when a command runs (see there why).
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from ..errors import OnnxDeployError

#: command name -> one-line help shown in ``onnxdeploy --help`` (without importing the module)
COMMANDS = {
    "zoo": "List the built-in models with their input shape, parameters and accuracy.",
    "export": "Export a PyTorch model to ONNX with dynamic axes and check parity.",
    "compare": "Compare two ONNX models on the same data: outputs, accuracy, latency.",
    "inspect": "Show a model's signature as written and as understood, ops, size, metadata.",
    "env": "Show the CPU, the flags int8 depends on, usable cores and versions.",
    "quantize": "Quantize an ONNX model to int8 and report size, accuracy and speed.",
    "optimize": "Optimize an ONNX graph pass by pass and prove the outputs did not change.",
    "serve": "Serve an ONNX model over HTTP (JSON, Open Inference Protocol, metrics).",
    "bench": "Load-test two served models side by side and say which to ship.",
    "pipeline": "Run every step on one model and write one report.",
    "containerize": "Build an OCI image that serves a model (and KServe/Kubernetes manifests).",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use and whose errors are ours to print."""

    def list_commands(self, ctx):
        return [name for name in COMMANDS if importlib.util.find_spec(f"onnxdeploy.cli.{name}")]

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        try:
            module = importlib.import_module(f"onnxdeploy.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"onnxdeploy.cli.{name}":
                return None
            raise
        return module.command

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OnnxDeployError as exc:
            click.echo(f"{type(exc).__name__}: {exc}", err=True)
            if ctx.meta.get("verbose") and exc.__cause__ is not None:
                cause = exc.__cause__
                click.echo(f"  caused by {type(cause).__name__}: {cause}", err=True)
            ctx.exit(exc.exit_code)


def _show_version(ctx, _param, value) -> None:
    # the version is looked up only when asked (importlib.metadata costs every serve process)
    if not value or ctx.resilient_parsing:
        return
    from .. import __version__

    click.echo(f"onnxdeploy, version {__version__}")
    ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_show_version, help="Show the version and exit.")
@click.option("-q", "--quiet", is_flag=True,
              help="Print no tables or progress: only errors, --json output and written files.")
@click.option("-v", "--verbose", is_flag=True,
              help="Log what each step does (INFO) and show the underlying cause of an error.")
@click.pass_context
def cli(ctx, quiet: bool, verbose: bool) -> None:
    """onnxdeploy: PyTorch to production through ONNX, measured at every step.

    Shell completion: eval "$(_ONNXDEPLOY_COMPLETE=bash_source onnxdeploy)" (zsh_source, fish_source).
    """
    import logging
    import os

    if quiet:  # rich (report.terminal) only when asked: serve's start and its image skip it
        from ..report.terminal import QUIET_ENV

        previous = os.environ.get(QUIET_ENV)
        os.environ[QUIET_ENV] = "1"

        def restore() -> None:  # the CLI may run inside a longer process (tests, notebooks)
            if previous is None:
                os.environ.pop(QUIET_ENV, None)
            else:
                os.environ[QUIET_ENV] = previous

        ctx.call_on_close(restore)
    ctx.meta["verbose"] = verbose
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        logging.getLogger("onnxdeploy").setLevel(logging.INFO)
