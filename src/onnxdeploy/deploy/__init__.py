"""Deploy: an OCI image that serves a model (``context``, ``builders``) and the manifests that run
it on KServe or plain Kubernetes (``manifests``).

``containerize_model(options) -> ContainerizeReport``: writes a build context (Containerfile, the
model with its external data, the serve dependencies as wheels pinned to the versions installed
here, onnxdeploy itself as a wheel), then builds it with podman, buildah or docker, or only
writes the context. Nothing half-made is left behind on failure.
"""

from __future__ import annotations

from .context import ContainerizeOptions, ContainerizeReport, containerize_model

__all__ = ["ContainerizeOptions", "ContainerizeReport", "containerize_model"]
