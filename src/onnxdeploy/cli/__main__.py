"""``python -m onnxdeploy.cli``: the same as the ``onnxdeploy`` command."""

from . import main

main()
