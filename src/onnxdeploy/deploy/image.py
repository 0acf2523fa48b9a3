"""Facts about the serving image that the build context and the manifests share."""

from __future__ import annotations

APP = "/opt/onnxdeploy"
VENV = f"{APP}/venv"
MODEL_DIR = f"{APP}/model"
#: the image's drain deadline; the manifests give the pod more (terminationGracePeriodSeconds)
GRACEFUL_TIMEOUT_S = 20
IMAGE_PORT = 8080
#: the Open Inference Protocol over gRPC, on in the image (KServe's Python server uses 8081 too)
GRPC_PORT = 8081
USER_ID = 10001
