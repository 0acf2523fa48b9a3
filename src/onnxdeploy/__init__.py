"""onnxdeploy: PyTorch to production through ONNX, measured at every step."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("onnxdeploy")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
