"""``python -m onnxdeploy``: the same as the ``onnxdeploy`` command."""

from .cli import main

main()
