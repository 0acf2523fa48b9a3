"""The one exception tree of onnxdeploy.

    OnnxDeployError                 base; ``exit_code`` tells the CLI how to leave
    ├── UserError                   the user's input is wrong (exit 2)
    │   ├── ModelLoadError          not an ONNX file, unreadable, invalid graph, unknown built-in
    │   ├── ModelSourceError        a factory that cannot be imported / returns no nn.Module, bad checkpoint
    │   ├── DataError               a data source that does not fit the model's inputs
    │   │   └── TextTooLongError    a text past the explicit length limit (HTTP 413 when served)
    │   ├── OptionError             an option value that makes no sense (unknown pass, bad shape ...)
    │   └── MissingDependencyError  an optional extra is not installed (message has the pip hint)
    ├── VerificationError           a transform ran but its numeric check failed (exit 1)
    ├── RuntimeFailure              something outside the user's input failed (exit 1):
    │   ├── ServerError             a server did not start, died, or answered nonsense
    │   └── BenchFailed             a bench ran but its runs failed (errors, no rate met the SLO)
    └── PipelineError               a pipeline step failed; exit code and message from its cause

A traceback that is not one of these is a bug in onnxdeploy. Third-party errors are
mapped where they are caught: ``raise DataError("...") from exc``.
"""

from __future__ import annotations


class OnnxDeployError(Exception):
    """Base of every error onnxdeploy raises on purpose."""

    exit_code = 1


class UserError(OnnxDeployError):
    """The user's input is wrong; the message says what and what was expected."""

    exit_code = 2


class ModelLoadError(UserError):
    """An ONNX model could not be read, parsed or checked, or a built-in name is unknown."""


class ModelSourceError(UserError):
    """A PyTorch model source (factory, checkpoint, input shape) cannot be used."""


class DataError(UserError):
    """A data source does not exist or does not fit the model's inputs."""


class TextTooLongError(DataError):
    """A text is longer than the explicit limit a text model accepts."""


class OptionError(UserError):
    """An option value is invalid."""


class MissingDependencyError(UserError):
    """An optional dependency is missing; the message carries the install hint."""


class VerificationError(OnnxDeployError):
    """A transform ran but its result failed the numeric check."""

    exit_code = 1


class RuntimeFailure(OnnxDeployError):
    """Something outside the user's input failed."""

    exit_code = 1


class ServerError(RuntimeFailure):
    """A server process failed to start, died, or answered something unexpected."""


class BenchFailed(RuntimeFailure):
    """A bench ran but failed its own checks; ``report`` holds what it measured (or None)."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class PipelineError(OnnxDeployError):
    """A step of the pipeline failed; ``step`` names it and ``cause`` is the original error."""

    def __init__(self, step: str, cause: BaseException):
        self.step = step
        self.cause = cause
        self.exit_code = getattr(cause, "exit_code", 1)
        super().__init__(f"step '{step}' failed: {type(cause).__name__}: {first_line(cause)}")


def first_line(exc: BaseException, default: str | None = None) -> str:
    """The first non-empty line of an exception's text (third-party messages run to pages),
    or ``default`` / the exception's type name when it has no text."""
    for line in str(exc).strip().splitlines():
        if line.strip():
            return line.strip()
    return default if default is not None else type(exc).__name__


def require(module: str, extra: str):
    """Import an optional dependency or raise MissingDependencyError with the pip hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install 'onnxdeploy[{extra}]'"
        ) from exc
