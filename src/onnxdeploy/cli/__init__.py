"""The ``onnxdeploy`` command line: the only place that prints to the terminal or exits.

Each command lives in its own module (``onnxdeploy.cli.<command>``) and is imported only when
it runs, so ``onnxdeploy --help`` and ``onnxdeploy serve`` never import torch.

The group itself is in ``cli.root``, imported by ``main`` when a command runs: this module
imports nothing, because every ``serve`` worker imports it again. granian starts its workers
with multiprocessing's spawn, which re-runs the parent's main module (the console script,
``from onnxdeploy.cli import main``) in each of them; importing click and the group there cost
each worker ~0.1-0.3 s of start time for nothing.
"""

from __future__ import annotations

import signal
import sys
from typing import Any


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    from .root import cli

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # SIGTERM (an operator's kill, a CI timeout) unwinds like Ctrl-C: ``finally`` blocks and
        # temporary directories clean up (a containerize stopped mid-build left its context
        # behind). ``serve`` installs its own handlers (drain) over this one.
        signal.signal(signal.SIGTERM, _terminated)
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="onnxdeploy")


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def __getattr__(name: str) -> Any:
    # ``from onnxdeploy.cli import cli`` (tests, embedding code) keeps working
    if name in ("cli", "COMMANDS", "LazyGroup"):
        from . import root

        return getattr(root, name)
    raise AttributeError(f"module 'onnxdeploy.cli' has no attribute {name!r}")
