"""``GET /openapi.json``: the service described as OpenAPI 3.1, with the served model's inputs."""

from __future__ import annotations

from typing import Any

from ..tokenizer import DEFAULT_MAX_CHARS
from .model import ModelInfo
from .text import TEXT_INPUT
from .validation import fmt_shape

_ERROR = {"$ref": "#/components/schemas/Error"}


def _responses(ok: dict[str, Any], *codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"200": ok}
    text = {400: "invalid input (name, dtype, shape, batch size, JSON)",
            401: "missing or wrong API key", 501: "texts sent but this server cannot tokenize", 404: "unknown model or version",
            413: "body larger than the limit (or a text longer than the text limit)", 415: "wrong content type",
            503: "overloaded (see Retry-After) or not ready"}
    for code in codes:
        out[str(code)] = {"description": text[code],
                          "content": {"application/json": {"schema": _ERROR}}}
    return out


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def example_inputs(sig) -> Any:
    """A ``/predict`` ``inputs`` value of zeros shaped like the model (batch 1, dynamic dims 1)."""
    from ..modelfile import is_fixed_dim

    def zeros(shape) -> Any:
        if not shape:
            return 0
        size = int(shape[0]) if is_fixed_dim(shape[0]) else 1
        return [zeros(shape[1:]) for _ in range(min(size, 64))]

    values = {s.name: zeros(s.shape or ()) for s in sig.inputs}
    return next(iter(values.values())) if len(values) == 1 else values


#: what the docs and the ready line show a text model
EXAMPLE_TEXTS = ["The service answered quickly.", "Nothing worked and I am upset."]


def text_limits(info: ModelInfo, *, max_batch: int, max_chars: int) -> str:
    """One sentence on what a text model takes and how it truncates (docs, ready line)."""
    return (f"texts are tokenized by the tokenizer carried in the model and truncated at "
            f"{info.text.max_length} tokens (the rest of a longer text is dropped); at most "
            f"{max_batch} texts a request (400 above), a text over {max_chars:,} characters is "
            "refused with 413")


def openapi_spec(info: ModelInfo, *, max_batch: int = 1024,
                 max_chars: int = DEFAULT_MAX_CHARS) -> dict[str, Any]:
    """The OpenAPI document for a server of this model."""
    inputs = ", ".join(f"{s.name}: {s.dtype} {fmt_shape(s.shape)}" for s in info.signature.inputs)
    predict_inputs: list[dict[str, Any]] = [
        {"type": "array", "description": "a batch for a one-input model"},
        {"type": "object", "description": "input name -> nested list"}]
    example: Any = example_inputs(info.signature)
    predict_doc = "Outputs by name; predictions and labels for a classifier."
    v2_doc = "Inputs as the model's metadata lists them (GET /v2/models/{name})."
    if info.text is not None:
        limits = text_limits(info, max_batch=max_batch, max_chars=max_chars)
        predict_inputs.insert(0, {"type": "array", "items": {"type": "string"},
                                  "minItems": 1, "maxItems": max_batch,
                                  "description": f"texts, one output row each; {limits}"})
        example = EXAMPLE_TEXTS
        predict_doc = (f"Takes texts: {{\"inputs\": [\"a text\", ...]}}, or token ids "
                       f"{{\"inputs\": {{name: [[...]]}}}} ({inputs}). The {limits}. "
                       f"{predict_doc}")
        v2_doc = (f"Texts: input '{TEXT_INPUT}', datatype BYTES, shape [N]; in JSON 'data' "
                  "holds the strings, in the binary extension each element is a 4-byte "
                  "little-endian length then its UTF-8 bytes (parameters.binary_data_size). "
                  f"Token-id inputs ({inputs}) are accepted too. The {limits}.")
    infer_errors = (400, 401, 404, 413, 415, 503) + ((501,) if info.text is not None else ())
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    version_param = {"name": "version", "in": "path", "required": True,
                     "schema": {"type": "string"}}
    v2_infer = {
        "summary": "Open Inference Protocol inference (JSON, or Triton binary tensors)",
        "description": v2_doc,
        "parameters": [name_param],
        "requestBody": {"content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                         "description": "JSON header of "
                                         "Inference-Header-Content-Length bytes, then raw tensors"},
        }},
        "responses": _responses(_json({"$ref": "#/components/schemas/InferResponse"},
                                      "outputs"), *infer_errors),
    }
    simple = {"200": {"description": "ok"}}
    paths: dict[str, Any] = {
        "/predict": {"post": {
            "summary": (f"Predict with {info.name} (texts, or inputs: {inputs})" if info.text
                        else f"Predict with {info.name} (inputs: {inputs})"),
            "description": predict_doc,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["inputs"],
                "properties": {"inputs": {"oneOf": predict_inputs}}},
                "example": {"inputs": example}}}},
            "responses": _responses(_json({"type": "object", "properties": {
                "model": {"type": "string"},
                "outputs": {"type": "object", "additionalProperties": {"type": "array"}},
                "predictions": {"type": "array", "items": {"type": "integer"}},
                "labels": {"type": "array", "items": {"type": "string"}}}}, "outputs"),
                *infer_errors),
        }},
        "/v2": {"get": {"summary": "Server metadata", "responses": simple}},
        "/v2/health/live": {"get": {"summary": "Liveness (no API key needed)", "responses": simple}},
        "/v2/health/ready": {"get": {"summary": "Readiness: session created and warmed up",
                                     "responses": _responses({"description": "ready"}, 503)}},
        "/v2/models/{name}": {"get": {"summary": "Model metadata", "parameters": [name_param],
                                      "responses": _responses({"description": "ok"}, 404)}},
        "/v2/models/{name}/versions/{version}": {"get": {
            "summary": "Model metadata", "parameters": [name_param, version_param],
            "responses": _responses({"description": "ok"}, 404)}},
        "/v2/models/{name}/ready": {"get": {"summary": "Model readiness", "parameters": [name_param],
                                            "responses": _responses({"description": "ok"}, 404, 503)}},
        "/v2/models/{name}/versions/{version}/ready": {"get": {
            "summary": "Model readiness", "parameters": [name_param, version_param],
            "responses": _responses({"description": "ok"}, 404, 503)}},
        "/v2/models/{name}/infer": {"post": v2_infer},
        "/v2/models/{name}/versions/{version}/infer": {
            "post": {**v2_infer, "parameters": [name_param, version_param]}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
            "200": {"description": "text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": simple}},
        "/docs": {"get": {"summary": "This API as an interactive page (Swagger UI)",
                          "responses": simple}},
    }
    tensor = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
        "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"}, "data": {"type": "array"},
        "parameters": {"type": "object"}}}
    from .. import __version__

    return {
        "openapi": "3.1.0",
        "info": {"title": f"onnxdeploy serving {info.name}", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string"}}},
                "Tensor": tensor,
                "InferRequest": {"type": "object", "required": ["inputs"], "properties": {
                    "id": {"type": "string"}, "parameters": {"type": "object"},
                    "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
                    "outputs": {"type": "array", "items": {"type": "object"}}}},
                "InferResponse": {"type": "object", "properties": {
                    "model_name": {"type": "string"}, "model_version": {"type": "string"},
                    "id": {"type": "string"},
                    "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}}}},
            },
        },
    }
